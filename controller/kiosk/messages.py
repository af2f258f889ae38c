"""Every text the person at the machine sees or hears, in English, marked for gettext extraction.

The English text is the message id (gettext's habit), so a translator reads the sentence itself.
Translations live in `locale/<lang>.po`, standard gettext files, compiled to `locale/<lang>.json` (i18n.py);
see docs/kiosk.md to add a language.
"""

from __future__ import annotations


def N_(text: str) -> str:  # noqa: N802 - gettext's marker name
    return text


FREE_NALOXONE = N_("Free naloxone")
REVERSES = N_("Naloxone reverses an opioid overdose.")
ANONYMOUS = N_("Free. No ID. Nobody records who you are.")
PRESS_TO_START = N_("Press to start")
EMERGENCY_HOLD = N_("Emergency? Hold any button for a kit right now.")
EMERGENCY_BUTTON = N_("Emergency? Press button {number} for a kit right now.")

WATCH_VIDEO = N_("Watch this short video.")
KIT_AFTER_VIDEO = N_("Your free kit comes right after it.")

KIT_COMING = N_("Your kit is coming. Please wait.")

TAKE_KIT = N_("Take your kit from the tray below.")
CALL_911 = N_("Call 911 for an overdose, then give the naloxone.")
ANOTHER_KIT = N_("Need another kit? Press any button within {seconds} seconds.")
KITS_TAKEN = N_("Kit {number} of up to {limit} for you.")
STAY_SAFE = N_("Thank you. Stay safe.")

OUT_OF_STOCK = N_("This machine is out of naloxone right now.")
GET_IT_HERE = N_("Get free naloxone now at:")
SCAN_FOR_MORE = N_("Scan for more places")
WATCH_ANYWAY = N_("Press any button to watch the training video anyway.")
ASK_STAFF = N_("Please ask the release desk staff for naloxone.")

VEND_FAILED = N_("Sorry, the kit did not come out.")
NOTHING_RECORDED = N_("Nothing about you was recorded.")

OUT_OF_SERVICE = N_("This machine is not working right now.")
REASON_SERVICE = N_("The machine is being serviced.")
REASON_BOARD = N_("The machine cannot reach its dispenser.")
REASON_LEDGER = N_("The machine cannot keep its records right now.")

EMERGENCY = N_("Emergency kit: take it from the tray now.")
STEP_CALL = N_("Call 911.")
STEP_BACK = N_("Lay the person on their back.")
STEP_SPRAY = N_("Put the nozzle in one nostril and press the plunger firmly.")
STEP_SECOND = N_("No response after 2 to 3 minutes? Give the second spray in the other nostril.")
STEP_STAY = N_("Stay with the person until help arrives.")
STEP_OF = N_("Step {number} of {total}")

PRESS_VOID = N_("That press was not counted.")
PRESS_AGAIN = N_("Press a language button to start.")

VIDEO_BROKEN = N_("The video is not working.")

ALL = [v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str)]
