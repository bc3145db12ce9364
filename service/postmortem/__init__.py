"""The postmortem: the draft in the runbook's template (``draft.py``) and the
postmortem-due reminders (``reminders.py``)."""
