"""What a ticket can be: its states, its priorities' order, the customers' channels by name.

One definition of each, imported wherever a feature needs it.
"""

from __future__ import annotations

ACTIVE = ("new", "open", "pending")
DONE = ("resolved", "closed")
RATEABLE = ("resolved", "closed")
PRIORITY_RANK = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
NORMAL_RANK = 2
CHANNEL_NAME = {"telegram": "Telegram", "whatsapp": "WhatsApp", "email": "Email"}
# Platforms whose sent messages can lose their buttons later (Telegram editMessageReplyMarkup);
# WhatsApp cannot edit, so there a tap on a spent button is answered in words instead.
EDITABLE_BUTTONS = frozenset({"telegram"})
