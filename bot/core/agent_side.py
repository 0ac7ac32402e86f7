"""The agents' side of the ticket state machine: thread messages, replies relayed to the
customer, claims, overrides, resolves and transfers.

Every method runs inside the dispatcher's one transaction per inbox event (see
:mod:`bot.core.step`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import select

from bot.core.assignment import AUTO, Assigner, seat
from bot.core.roles import has_role, may_claim
from bot.core.ticket_step import CardTooEarly, TicketStep, cap_first
from bot.domain.customer_requests import rating_data
from bot.domain.events import AgentAction, AgentMessage, SlackFile
from bot.domain.files import describe, outbound_plan
from bot.domain.mrkdwn import conversation_summary, escape, person
from bot.domain.outbound import Button, FileRef, Outbound
from bot.domain.tickets import ACTIVE
from storage.models import AuditEntry, Customer, Message, Ticket


class AgentSide(TicketStep):
    def is_note(self, text: str) -> bool:
        """A note by prefix, however it starts: whitespace, quotes, a Slack quote (``>``,
        sent as ``&gt;``) or formatting before the prefix do not make it a reply."""
        return is_note_text(text, self.rules.slack.note_prefixes)

    async def agent_message(self, ev: AgentMessage) -> None:
        if ev.thread_ts is None or ev.thread_ts == ev.ts:
            return  # not in a thread: chatter in the channel, not about a ticket
        ticket = await self.ticket_by_card(ev.slack_channel, ev.thread_ts)
        if ticket is None:
            if await self._card_in_flight(ev.slack_channel):
                raise CardTooEarly(f"{ev.slack_channel} {ev.thread_ts}")
            moved = await self.ticket_by_former_card(ev.slack_channel, ev.thread_ts)
            if moved is None:
                return  # a thread that is not a card's: chatter, not about a ticket
            if (moved.slack_channel, moved.slack_ts) != (ev.slack_channel, ev.thread_ts):
                await self._in_former_thread(moved, ev)
                return
            # Its card's ts was recorded between the first read and these (on PostgreSQL
            # each statement sees what was committed before it began): this is its card.
            ticket = moved
        text = ev.text.strip()
        is_note = self.is_note(text)
        # Composer mode: the thread is the team's; the customer gets only what is sent with
        # Reply or the "Send to customer" shortcut. A message also sent to the channel is
        # addressed to colleagues, in either mode.
        internal = is_note or ev.broadcast or self.rules.slack.relay == "composer"
        claimed = False
        if not internal and ticket.assignee_id is None:
            # Replying claims the ticket, so only those who may claim it (``claim:``) relay.
            if not await self.claim_allowed(ticket, ev.user_id, "thread_reply", ev=ev):
                self._keep_note(ticket, ev)
                self.react(ticket, ev.ts, self.rules.slack.failed_reaction)
                return
            self._assign(ticket, ev.user_id, ev.user_name, "replied in the thread", "replied")
            self.set_status(ticket, "open", ev.user_id, "agent replied")
            # Said in the thread as the Claim button says it, so everyone sees who took it.
            self.thread(ticket, f"🙋 {person(ev.user_id, ev.user_name)} claimed this ticket.")
            claimed = True
        if internal or ticket.assignee_id != ev.user_id or not (text or ev.files):
            self._keep_note(ticket, ev)
            self.react(ticket, ev.ts, self.rules.slack.note_reaction)
            if claimed:
                await self.refresh_card(ticket)
            return
        files = self._agent_files(ticket, ev)
        if not text and not files:  # every file was refused, and the thread says so
            if claimed:
                await self.refresh_card(ticket)
            return
        await self.relay(ticket, ev.user_id, text, slack_ts=ev.ts, files=files)

    def _keep_note(self, ticket: Ticket, ev: AgentMessage) -> None:
        """An agent's thread message kept on the ticket as an internal note."""
        self.s.add(
            Message(
                ticket_id=ticket.id,
                direction="note",
                author=ev.user_id,
                channel="slack",
                slack_ts=ev.ts,
                text=ev.text,
                attachments=[f.model_dump(mode="json", exclude={"url_private"}) for f in ev.files],
                created_at=self.now,
            )
        )

    async def _in_former_thread(self, ticket: Ticket, ev: AgentMessage) -> None:
        """Written in the thread of a card the desk replaced (the ticket was transferred, or
        its card re-posted): Slack still offers the reply box there. A note is kept on the
        ticket; anything meant for the customer is refused there, visibly, with where the
        ticket lives now: it is never relayed from, nor lost in, a card that no longer is."""
        assert ev.thread_ts is not None
        text = ev.text.strip()
        where = f"<#{ticket.slack_channel}>" if ticket.slack_channel else "its new card"
        internal = self.is_note(text) or ev.broadcast or self.rules.slack.relay == "composer"

        def at_old_card(kind: Literal["slack_reaction", "slack_thread"], **fields: Any) -> None:
            # Addressed to the old card explicitly (its channel, and the message or the thread).
            self.fx.say(
                Outbound(
                    channel="slack",
                    kind=kind,
                    destination=ev.slack_channel,
                    ticket_id=ticket.id,
                    **fields,
                )
            )

        if internal:
            self._keep_note(ticket, ev)
            at_old_card("slack_reaction", reply_to=ev.ts, emoji=self.rules.slack.note_reaction)
            self.thread(
                ticket,
                f"📝 {person(ev.user_id, ev.user_name)} wrote a note in the old card's thread:"
                f" {text}",
            )
            self.decided("tickets.note_in_old_thread ticket=%d user=%s", ticket.id, ev.user_id)
            return
        at_old_card("slack_reaction", reply_to=ev.ts, emoji=self.rules.slack.failed_reaction)
        at_old_card(
            "slack_thread",
            reply_to=ev.thread_ts,
            text=f"🚫 Not sent to the customer: ticket #{ticket.id} lives in {where} now"
            f" (team *{ticket.team}*). Write your reply in the thread of its card there.",
        )
        self.decided(
            "tickets.reply_refused ticket=%d user=%s reason=old_card", ticket.id, ev.user_id
        )

    async def relay(
        self,
        ticket: Ticket,
        user_id: str,
        text: str,
        *,
        slack_ts: str | None = None,
        files: Sequence[tuple[SlackFile, FileRef]] = (),
    ) -> None:
        """Send ``text`` and ``files`` by ``user_id`` (the ticket's assignee) to the customer:
        a message row each, the customer's copies, the first response, waiting on the
        customer, the card."""
        if text:
            msg = await self._outgoing(ticket, user_id, slack_ts, text=text)
            self.tell_customer(ticket, self.customer_copy(ticket, text), message=msg)
        for f, ref in files:
            attachment = f.model_dump(mode="json", exclude={"url_private"})
            file_msg = await self._outgoing(ticket, user_id, slack_ts, attachments=[attachment])
            self.fx.say(
                Outbound(
                    channel=ticket.channel,
                    kind="file",
                    destination=ticket.chat_id,
                    ticket_id=ticket.id,
                    file=ref,
                ),
                file_msg,
            )
        if ticket.first_response_at is None:
            ticket.first_response_at = self.now
        freed = ticket.status in ("new", "open")
        if freed:
            self.set_status(ticket, "pending", user_id, "agent replied; waiting on customer")
        ticket.updated_at = self.now
        await self.refresh_card(ticket)
        if freed:  # waiting on the customer does not count against capacity
            await self._capacity_freed(ticket.assignee_id)
        self.decided("tickets.reply_relayed ticket=%d agent=%s", ticket.id, user_id)

    async def _outgoing(
        self,
        ticket: Ticket,
        user_id: str,
        slack_ts: str | None,
        *,
        text: str = "",
        attachments: list[dict[str, Any]] | None = None,
    ) -> Message:
        """A message from the agent to the customer, pending delivery (flushed: it has an id)."""
        msg = Message(
            ticket_id=ticket.id,
            direction="out",
            author=user_id,
            channel=ticket.channel,
            slack_ts=slack_ts,
            text=text,
            attachments=attachments or [],
            delivery="pending",
            created_at=self.now,
        )
        self.s.add(msg)
        await self.s.flush()
        return msg

    def customer_copy(self, ticket: Ticket, text: str, name: str | None = None) -> str:
        """Exactly what the customer gets for ``text`` (the Reply modal previews this)."""
        name = name or ticket.assignee_name
        return f"{name}: {text}" if self.rules.texts.show_agent_name and name else text

    def _agent_files(self, ticket: Ticket, ev: AgentMessage) -> list[tuple[SlackFile, FileRef]]:
        """The files the assignee shared that the customer's platform takes, each with how it
        is sent; one over the platform's limit is said in the thread, never silently dropped."""
        accepted: list[tuple[SlackFile, FileRef]] = []
        for f in ev.files:
            plan = outbound_plan(ticket.channel, f.mimetype, f.size)
            if plan.refused is not None or not f.url_private:
                why = plan.refused or "Slack gave no download link for it"
                self.thread(
                    ticket,
                    f"⚠️ Not sent to the customer: {escape(describe('file', f.name, f.size))}."
                    f" {why}. Share a smaller file, or a link.",
                )
                self.react(ticket, ev.ts, self.rules.slack.failed_reaction)
                self.decided(
                    "tickets.file_refused ticket=%d direction=out channel=%s",
                    ticket.id,
                    ticket.channel,
                )
                continue
            ref = FileRef(
                source="slack",
                file_id=f.id,
                kind=plan.kind,
                name=f.name or None,
                mime_type=f.mimetype,
                size=f.size,
                url=f.url_private,
            )
            accepted.append((f, ref))
        return accepted

    async def may_override(
        self, ticket: Ticket, ev: AgentAction, action: str, **detail: Any
    ) -> bool:
        """Changing a ticket assigned to another person is for the team's lead and supervisors.
        Allowed: written to the audit trail (who, in what role, whose ticket). Refused: audited
        too, and the person who clicked is told privately; nothing changes."""
        actor = ev.user_id
        if ticket.assignee_id is None or ticket.assignee_id == actor:
            return True
        if await has_role(self.s, self.rules, actor, "supervisor"):
            role = "supervisor"
        elif self.rules.team(ticket.team).lead == actor:
            role = "lead"
        else:
            role = None
        self.s.add(
            AuditEntry(
                at=self.now,
                actor=actor,
                action=action if role else "refused",
                target=f"ticket #{ticket.id}",
                detail={"assignee": ticket.assignee_id, "role": role or "agent", **detail}
                | ({} if role else {"wanted": action}),
            )
        )
        if role:
            return True
        self.decided(
            "tickets.override_refused ticket=%d user=%s action=%s", ticket.id, actor, action
        )
        if ev.response_url:
            self.fx.say(
                Outbound(
                    channel="slack",
                    kind="slack_response",
                    destination=ev.response_url,
                    text=(
                        f"Ticket #{ticket.id} is assigned to <@{ticket.assignee_id}>: only they,"
                        " the team's lead or a supervisor can change it. Nothing was done."
                    ),
                )
            )
        return False

    async def claim_allowed(
        self,
        ticket: Ticket,
        user_id: str,
        via: str,
        *,
        action: AgentAction | None = None,
        ev: AgentMessage | None = None,
    ) -> bool:
        """May ``user_id`` claim ``ticket`` (its team's ``claim:`` in rules.yaml)? A claim by a
        lead or supervisor who is not one of the team's agents is audited; a refusal is audited
        too, and told only to the person: through the click's response_url, or ephemerally in
        the thread they wrote in."""
        role = await may_claim(self.s, self.rules, ticket.team, user_id)
        if role in ("channel", "agent"):
            return True
        self.s.add(
            AuditEntry(
                at=self.now,
                actor=user_id,
                action="claimed" if role else "refused",
                target=f"ticket #{ticket.id}",
                detail={"team": ticket.team, "role": role or "not an agent", "via": via}
                | ({} if role else {"wanted": "claim"}),
            )
        )
        if role:
            return True
        self.decided(
            "tickets.claim_refused ticket=%d user=%s team=%s via=%s",
            ticket.id,
            user_id,
            ticket.team,
            via,
        )
        who = f"the agents of team *{ticket.team}*, its lead and supervisors"
        if action is not None and action.response_url:
            self.fx.say(
                Outbound(
                    channel="slack",
                    kind="slack_response",
                    destination=action.response_url,
                    text=f"🚫 Only {who} can claim ticket #{ticket.id}. Nothing was done.",
                )
            )
        elif ev is not None:
            self.fx.say(
                Outbound(
                    channel="slack",
                    kind="slack_ephemeral",
                    destination=ev.slack_channel,
                    user=user_id,
                    reply_to=ev.thread_ts,
                    text=f"🚫 Not sent to the customer: replying claims ticket #{ticket.id},"
                    f" and only {who} can claim it. Your message stays as an internal note.",
                )
            )
        return False

    async def agent_action(self, ev: AgentAction) -> None:
        """A card's button: transfer, claim or resolve. (The card's menus and an incident's
        buttons have routes of their own: ``bot/wiring.py``.)"""
        ticket = await self.s.get(Ticket, ev.ticket_id, with_for_update=True)
        if ticket is None:
            return
        if (
            ev.message_ts
            and ticket.slack_ts is None
            and await self._card_in_flight(ticket.slack_channel or "")
        ):
            # A button of a card Slack has posted whose ts is not recorded yet (the outcome's
            # transaction has not committed): tried again shortly, not done without the card
            # (a transfer's line in the old card's thread, its buttons taken away, were lost).
            raise CardTooEarly(f"{ticket.slack_channel} {ev.message_ts}")
        if ev.action == "transfer":
            target = ev.team or ""
            moves = ticket.status in ACTIVE and target != ticket.team and target in self.rules.teams
            if moves and not await self.may_override(ticket, ev, "transferred", team=target):
                return
            await self._transfer(ticket, ev.user_id, target)
            return
        if ev.action == "claim":
            # A person's claim wins over an automatic assignment (even one made a moment ago,
            # while the card still showed Claim), never over another person's claim.
            was = ticket.assignee_id
            automatic = ticket.assigned_by == AUTO and was != ev.user_id
            if ticket.status in ACTIVE and (was is None or automatic):
                if not await self.claim_allowed(ticket, ev.user_id, "button", action=ev):
                    return
                self._assign(ticket, ev.user_id, ev.user_name, "claimed", "claimed")
                if ticket.status == "new":
                    self.set_status(ticket, "open", ev.user_id, "claimed")
                took = f" (it had been given to <@{was}> automatically)" if was else ""
                who = person(ev.user_id, ev.user_name)
                self.thread(ticket, f"🙋 {who} claimed this ticket{took}.")
                await self.refresh_card(ticket)
            return
        if ticket.status in ACTIVE:
            if not await self.may_override(ticket, ev, "resolved"):
                return
            await self.resolve(ticket, ev.user_id, ev.user_name)

    async def resolve(
        self,
        ticket: Ticket,
        user_id: str,
        user_name: str,
        why: str = "resolved from Slack",
        *,
        claim: bool = True,
    ) -> None:
        """Resolve an active ticket: the closing message with its rating prompt, a thread line.
        ``claim``: a person who resolves an unassigned ticket takes it (an automation does not)."""
        if ticket.status in ACTIVE:
            if ticket.assignee_id is None and claim:
                self._assign(ticket, user_id, user_name, "resolved it", "resolved")
            self.set_status(ticket, "resolved", user_id, why)
            ticket.resolved_at = self.now
            ticket.resolved_by = user_id
            ticket.rating = None  # each resolve asks anew; earlier ratings stay in the history
            texts = await self.texts_for(ticket)
            text = texts.resolved.format(ticket=ticket.id)
            # The prompt is a message row so the desk learns its platform id (to take its
            # buttons away later) and its buttons can name the resolve they belong to.
            prompt = Message(
                ticket_id=ticket.id,
                direction="system",
                author="desk",
                channel=ticket.channel,
                text=text,
                delivery="pending",
                purpose="rating_prompt",
                created_at=self.now,
            )
            self.s.add(prompt)
            await self.s.flush()
            self.tell_customer(
                ticket,
                text,
                buttons=tuple(
                    Button(text=str(n), data=rating_data(ticket.id, prompt.id, n))
                    for n in range(1, 6)
                ),
                message=prompt,
            )
            if not ticket.incident_only:  # the incident's thread says it once for them all
                self.thread(ticket, f"✅ {person(user_id, user_name)} resolved this ticket.")
            await self.refresh_card(ticket)
            await self._capacity_freed(ticket.assignee_id)
            self.decided("tickets.resolved ticket=%d by=%s", ticket.id, user_id)

    async def _transfer(self, ticket: Ticket, by: str, target: str) -> None:
        """Move an active ticket to another team. Its card is posted in that team's channel
        with the conversation so far in the thread; the old card says where it went and loses
        its buttons. The customer notices nothing."""
        if ticket.status not in ACTIVE or target == ticket.team or target not in self.rules.teams:
            return
        old_team, old_channel, old_ts = ticket.team, ticket.slack_channel, ticket.slack_ts
        team = self.rules.teams[target]
        self.history(ticket, "team", by, old_team, target, f"transferred by <@{by}>")
        if old_ts is not None:
            # Addressed to the old card explicitly (reply_to), so they stay there.
            moved = f"➡️ Transferred to team *{target}* (<#{team.channel}>) by <@{by}>."
            await self.hooks.cards.freeze(self, ticket, moved)
            self.fx.say(
                Outbound(
                    channel="slack",
                    kind="slack_thread",
                    destination=old_channel,
                    ticket_id=ticket.id,
                    reply_to=old_ts,
                    text=f"➡️ <@{by}> transferred this ticket to team *{target}* "
                    f"(<#{team.channel}>); it goes on there.",
                )
            )
        assigner = Assigner(self)
        if ticket.assignee_id is not None and ticket.assignee_id not in team.agents:
            assigner.release(ticket, by, f"transferred to {target}")
        ticket.team = target
        ticket.slack_channel = team.channel
        ticket.slack_ts = None  # the new card's ts, once posted
        ticket.waiting_reason = None
        # Its assignee, clocks (a new team may have its own SLA) and card in the new channel.
        choice = await seat(self, ticket, assign=ticket.assignee_id is None)
        customer = await self.s.get_one(Customer, ticket.customer_id)
        said = (
            await self.s.scalars(
                select(Message).where(Message.ticket_id == ticket.id).order_by(Message.id)
            )
        ).all()
        head = f"➡️ Transferred from team *{old_team}* by <@{by}>."
        self.thread(ticket, conversation_summary(customer.name, said, head=head))
        if choice is not None and choice.agent is not None:
            self.thread(ticket, f"👤 {cap_first(choice.reason)}.")
        self.decided(
            "tickets.transferred ticket=%d from=%s to=%s by=%s", ticket.id, old_team, target, by
        )


NOTE_LEAD = re.compile(r"^(?:\s|&gt;|>|[\"'`“”‘’«»„*_~])+")


def is_note_text(text: str, prefixes: Sequence[str]) -> bool:
    bare = NOTE_LEAD.sub("", text).lower()
    return any(bare.startswith(p.lower()) or text.strip().lower().startswith(p) for p in prefixes)
