"""The kiosk: what the person at the machine sees and hears (screens, captions, speech), per language."""
