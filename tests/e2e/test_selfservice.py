"""Self-service over the stand-ins: the customer's language, status by ticket number."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from storage.models import Customer, Message, StatusLookup, Ticket

from .conftest import RULES, SUPPORT, Stack


def said(message: dict[str, Any]) -> str:
    """What a WhatsApp customer reads in one of the desk's messages, plain or interactive."""
    if message["type"] == "interactive":
        return str(message["interactive"]["body"]["text"])
    return str(message["text"]["body"])


async def test_whatsapp_customer_writing_chinese_gets_the_chinese_ack(stack: Stack) -> None:
    wa = stack.standins.whatsapp
    await wa.customer_says("8613800000001", "你好，我的退款什么时候到账？", name="Li")
    ack = (await wa.wait_for_sent("8613800000001", 1))[0]
    assert said(ack) == "我们已收到您的消息，工单号为 #1，客服会在这里回复您。"
    async with stack.sessions() as s:
        ticket = await s.scalar(select(Ticket))
        customer = await s.scalar(select(Customer))
    assert ticket is not None and ticket.language == "zh"
    assert customer is not None and customer.language == "zh"


async def test_whatsapp_customer_writing_spanish_gets_the_spanish_ack(stack: Stack) -> None:
    wa = stack.standins.whatsapp
    await wa.customer_says("34600000002", "Hola, mi pedido no ha llegado todavía", name="Ana")
    ack = (await wa.wait_for_sent("34600000002", 1))[0]
    assert said(ack).startswith("Gracias, hemos recibido su mensaje. Su número de ticket es #1")


async def test_text_that_disagrees_with_telegrams_hint_wins(stack: Stack) -> None:
    tg = stack.standins.telegram
    # An English Telegram app, a customer who writes Russian: answer in Russian.
    await tg.customer_says(
        21, "Здравствуйте, мой заказ до сих пор не доставлен", first_name="Oleg", language_code="en"
    )
    ack = (await tg.wait_for_sent(21, 1))[0]
    assert ack["text"].startswith("Спасибо, мы получили ваше сообщение. Номер вашего обращения")
    assert (await stack.ticket()).language == "ru"


async def test_a_short_message_keeps_telegrams_hint(stack: Stack) -> None:
    tg = stack.standins.telegram
    await tg.customer_says(22, "ok", first_name="Zoe", language_code="es")
    ack = (await tg.wait_for_sent(22, 1))[0]
    assert ack["text"].startswith("Gracias, hemos recibido su mensaje.")
    assert (await stack.ticket()).language == "es"


# -- status by ticket number ---------------------------------------------------------------


async def _lookups(stack: Stack) -> list[tuple[str, int | None, str]]:
    async with stack.sessions() as s:
        rows = (await s.scalars(select(StatusLookup).order_by(StatusLookup.id))).all()
    return [(r.via, r.asked, r.answer) for r in rows]


async def _ticket_count(stack: Stack) -> int:
    async with stack.sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(Ticket)) or 0)


async def test_telegram_status_command_button_and_number_answer_the_own_ticket(
    stack: Stack,
) -> None:
    tg = stack.standins.telegram
    await tg.customer_says(31, "My parcel has not arrived yet", first_name="Ann")
    ack = (await tg.wait_for_sent(31, 1))[0]
    assert ack["reply_markup"] == {
        "inline_keyboard": [[{"text": "My tickets", "callback_data": "status:mine"}]]
    }
    card = await stack.card()
    ticket = await stack.ticket(1)
    updated = ticket.updated_at.strftime("%Y-%m-%d %H:%M UTC")

    query = await tg.customer_presses(31, ack["message_id"], "status:mine")
    listed = (await tg.wait_for_sent(31, 2))[1]
    assert listed["text"] == (
        f"Your tickets:\n#1: received, waiting for an agent (last update {updated})"
    )
    assert any(a["callback_query_id"] == query for a in tg.answered_callbacks)

    await tg.customer_says(31, "/status 1", first_name="Ann")
    one = (await tg.wait_for_sent(31, 3))[2]
    assert one["text"] == f"Ticket #1: received, waiting for an agent. Last update {updated}."
    await tg.customer_says(31, "/status", first_name="Ann")
    again = (await tg.wait_for_sent(31, 4))[3]
    assert again["text"] == listed["text"]

    # Nothing of it reached the agents or the ticket.
    assert await _ticket_count(stack) == 1
    async with stack.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Message)) == 1
    thread = stack.standins.slack.thread(SUPPORT, card["ts"])
    assert not [m for m in thread if "status" in m["text"]]
    assert await _lookups(stack) == [
        ("button", None, "list"),
        ("message", 1, "found"),
        ("message", None, "list"),
    ]


async def test_someone_elses_number_answers_like_a_missing_one(stack: Stack) -> None:
    tg, wa = stack.standins.telegram, stack.standins.whatsapp
    await tg.customer_says(41, "I was charged twice for order 881", first_name="Owner")
    await tg.wait_for_sent(41, 1)
    await wa.customer_says("15550000041", "Hello, where is my order?", name="Other")
    await wa.wait_for_sent("15550000041", 1)

    await wa.customer_says("15550000041", "status 1")  # ticket 1 is the Telegram customer's
    theirs = said((await wa.wait_for_sent("15550000041", 2))[1])
    await wa.customer_says("15550000041", "status 7")  # no ticket 7 at all
    missing = said((await wa.wait_for_sent("15550000041", 3))[2])
    assert theirs == 'We found no ticket #1 of yours. Send "status" to list your tickets.'
    assert missing == theirs.replace("#1", "#7")
    sent = wa.sent_to("15550000041")
    assert sent[1]["type"] == sent[2]["type"] == "text"  # same shape, no extra buttons
    assert "charged twice" not in theirs and "881" not in theirs
    assert await _lookups(stack) == [
        ("message", 1, "not_theirs"),
        ("message", 7, "unknown"),
    ]
    assert (await stack.ticket(1)).status == "new"


async def test_walking_ticket_numbers_is_rate_limited(stack: Stack) -> None:
    wa = stack.standins.whatsapp
    limit = RULES.status_lookup.max_lookups
    for n in range(1, limit + 3):
        await wa.customer_says("15550000051", f"#{n}", name="Walker")
        await wa.wait_for_sent("15550000051", n)
    answers = [said(m) for m in wa.sent_to("15550000051")]
    assert answers[:limit] == [
        f'We found no ticket #{n} of yours. Send "status" to list your tickets.'
        for n in range(1, limit + 1)
    ]
    refused = "You have looked up many tickets just now. Please try again in a few minutes."
    assert answers[limit:] == [refused, refused]
    lookups = await _lookups(stack)
    assert [answer for _, _, answer in lookups] == ["unknown"] * limit + ["limited"] * 2
    assert await _ticket_count(stack) == 0  # a lookup never opens a ticket
    assert stack.cards() == []


async def test_whatsapp_localized_word_and_my_tickets_button(stack: Stack) -> None:
    wa = stack.standins.whatsapp
    await wa.customer_says("8613800000061", "我买的耳机坏了，可以换货吗？", name="Wang")
    ack = (await wa.wait_for_sent("8613800000061", 1))[0]
    assert ack["interactive"]["action"]["buttons"] == [
        {"type": "reply", "reply": {"id": "status:mine", "title": "我的工单"}}
    ]
    updated = (await stack.ticket(1)).updated_at.strftime("%Y-%m-%d %H:%M UTC")
    await wa.customer_says("8613800000061", "状态 1")
    one = said((await wa.wait_for_sent("8613800000061", 2))[1])
    assert one == f"工单 #1：已收到，等待客服处理。最后更新 {updated}。"
    await wa.customer_presses("8613800000061", "status:mine", "我的工单")
    listed = said((await wa.wait_for_sent("8613800000061", 3))[2])
    assert listed == f"您的工单：\n#1：已收到，等待客服处理（最后更新 {updated}）"
    assert await _ticket_count(stack) == 1


async def test_a_lookup_neither_opens_nor_reopens(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(71, "status", first_name="New")  # a first contact, only a lookup
    none = (await tg.wait_for_sent(71, 1))[0]
    assert none["text"] == "You have no tickets with us yet. Write here and we will open one."
    assert await _ticket_count(stack) == 0
    await tg.customer_says(71, "The invoice shows the wrong address", first_name="New")
    card = await stack.card()
    await slack.agent_clicks(card["channel"], card["ts"], "ticket_resolve", "U0BOB")
    await tg.wait_for_sent(71, 3)  # the ack, then the rating prompt
    await tg.customer_says(71, "#1", first_name="New")
    answer = (await tg.wait_for_sent(71, 4))[3]
    assert answer["text"].startswith("Ticket #1: resolved. Last update")
    ticket = await stack.ticket(1)
    assert ticket.status == "resolved" and await _ticket_count(stack) == 1


async def test_telegram_menu_offers_status_in_each_language(stack: Stack) -> None:
    tg = stack.standins.telegram
    assert tg.commands == {
        "": [{"command": "status", "description": "My tickets"}],
        "en": [{"command": "status", "description": "My tickets"}],
        "zh": [{"command": "status", "description": "我的工单"}],
        "es": [{"command": "status", "description": "Mis tickets"}],
        "ru": [{"command": "status", "description": "Мои обращения"}],
    }
