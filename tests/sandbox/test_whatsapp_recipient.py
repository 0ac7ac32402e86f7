"""The WhatsApp stand-in takes a send addressed by business-scoped user id (``recipient``), as
the desk sends to a customer WhatsApp gave no number for, and still refuses a bad address."""

from __future__ import annotations

from adapters.whatsapp import message_body
from bot.domain.outbound import Outbound
from sandbox import StandIns
from tests.sandbox.test_standins import FakeDesk, _graph_post, desk, standins

__all__ = ["desk", "standins"]  # the fixtures, from test_standins


async def test_a_send_to_a_user_id_is_accepted(standins: StandIns, desk: FakeDesk) -> None:
    out = Outbound(channel="whatsapp", kind="text", destination="US.1349120865", text="Hi")
    status, body = await _graph_post(standins, "EAAG-right", message_body(out))
    assert status == 200, body
    assert standins.whatsapp.sent[-1]["recipient"] == "US.1349120865"
    bad = {**message_body(out), "recipient": "not an id"}
    status, body = await _graph_post(standins, "EAAG-right", bad)
    assert status == 400 and "recipient" in body["error"]["error_data"]["details"]
