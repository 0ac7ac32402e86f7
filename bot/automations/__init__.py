"""Automations at work in the desk (``automations:`` in rules.yaml).

:mod:`bot.domain.automations` decides, purely; this package feeds it the desk's happenings and
carries out what it decides: :mod:`.journal` (what a step did, as the engine's events),
:mod:`.runner` (event rules in the step's transaction, anchors and timers), :mod:`.actions`
(each action through the desk's own paths), :mod:`.scheduler` (time rules that came due) and
:mod:`.views` (what ``/desk automations`` and ``deskbot automations explain`` show).
"""
