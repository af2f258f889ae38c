"""Vending: the press -> video -> dispense flow, alarms, column choice (stock), temperature bands and
the training-video player that gates every release."""
