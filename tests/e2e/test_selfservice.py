"""Self-service over the stand-ins: the customer's language."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from storage.models import Customer, Ticket

from .conftest import Stack


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
