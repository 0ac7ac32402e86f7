"""A report (the dict :func:`bot.reports.metrics.build` returns) as text, CSV or Block Kit.

Every rendering reads the same dict, so ``deskbot report`` and ``/desk stats`` cannot differ.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from bot.domain.mrkdwn import escape

LOW_N_MARK = "(n under 5)"


def duration(seconds: int | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m {seconds % 60:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def _pct(figure: dict[str, Any] | None) -> str:
    if not figure or figure.get("value") is None:
        return "–"
    return f"{figure['value']:.1f}%"


def metric_lines(m: dict[str, Any]) -> list[str]:
    """The figures of one block of metrics, one line each, every figure with its n."""
    fr, rt, res, csat = m["first_response"], m["reply_time"], m["resolution_time"], m["csat"]
    oldest = fr["oldest_unanswered"]
    unanswered = f"{fr['unanswered']} unanswered" + (
        f" (oldest open {duration(oldest)})" if oldest is not None else ""
    )
    counts = " ".join(f"{k}★{v}" for k, v in csat["counts"].items())
    mean = f", mean {csat['mean']:.2f}" if csat["mean"] is not None else ""
    sla = m["sla_first_response"]
    return [
        f"tickets created {m['tickets_created']} · resolutions {m['resolutions']}"
        f" · tickets resolved {m['tickets_resolved']} · backlog {m['backlog']}",
        f"first response: median {duration(fr['median'])}, p90 {duration(fr['p90'])},"
        f" mean {duration(fr['mean'])} (n={fr['n']}) · {unanswered}",
        f"reply time: median {duration(rt['median'])}, p90 {duration(rt['p90'])} (n={rt['n']})",
        f"resolution time: median {duration(res['median'])}, p90 {duration(res['p90'])}"
        f" (n={res['n']})",
        f"CSAT {_pct(csat)} (n={csat['n']}{mean}; {counts})"
        f" · response rate {_pct(m['csat_response_rate'])}"
        f" (n={m['csat_response_rate']['n']})",
        f"reopen rate {_pct(m['reopen_rate'])} (n={m['reopen_rate']['n']})"
        f" · one touch {_pct(m['one_touch'])} (n={m['one_touch']['n']})"
        + (f" · SLA first response {_pct(sla)} (n={sla['n']})" if sla else ""),
    ]


def self_service_line(report: dict[str, Any]) -> str | None:
    """The knowledge base's share of the period, when it suggested anything."""
    ss = report.get("self_service") or {}
    if not ss.get("kb_suggested"):
        return None
    return (
        f"knowledge base: {ss['kb_suggested']} suggested · {ss['deflected']} deflected"
        f" (no ticket) · {ss['to_a_person']} went on to a ticket · {ss['unanswered']} unanswered"
    )


def title(report: dict[str, Any]) -> str:
    span = report["from"] if report["from"] == report["to"] else f"{report['from']}..{report['to']}"
    by = f" by {report['by']}" if report["by"] else ""
    return f"Desk figures {span} ({report['tz']}){by} · {report['n']} tickets"


def group_label(group: dict[str, Any], *, slack: bool = False) -> str:
    """A group's name: an agent by their display name (in Slack, a mention, which Slack shows
    as the person's name to everyone)."""
    label = str(group.get("name") or group["key"])
    if slack and "former" in group and group["key"] != "unassigned":
        label = f"<@{group['key']}>"
    if group.get("former"):
        label += " (former)"
    if group["low_n"]:
        label += f" {LOW_N_MARK}"
    return f"{label} · n={group['n']}"


def to_text(report: dict[str, Any]) -> str:
    lines = [title(report), *("  " + line for line in metric_lines(report["metrics"]))]
    if kb := self_service_line(report):
        lines.append("  " + kb)
    for group in report["groups"]:
        lines.append("")
        lines.append(group_label(group))
        lines += ["  " + line for line in metric_lines(group["metrics"])]
    lines += ["", *(f"note: {note}" for note in report["notes"])]
    return "\n".join(lines) + "\n"


def flatten(metrics: dict[str, Any]) -> dict[str, Any]:
    """``{"csat": {"value": 80}}`` → ``{"csat_value": 80}``: one column per figure."""
    flat: dict[str, Any] = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            for part, inner in value.items():
                if isinstance(inner, dict):
                    for k, v in inner.items():
                        flat[f"{name}_{part}_{k}"] = v
                else:
                    flat[f"{name}_{part}"] = inner
        else:
            flat[name] = value
    return flat


def to_csv(report: dict[str, Any]) -> str:
    """One row for the whole desk, then one per group; the same columns as the JSON."""
    rows = [{"group": "all", "n": report["n"], "low_n": "", "former": ""}]
    rows[0].update(flatten(report["metrics"]))
    for g in report["groups"]:
        row: dict[str, Any] = {
            "group": g["key"],
            "n": g["n"],
            "low_n": g["low_n"],
            "former": g.get("former", ""),
        }
        row.update(flatten(g["metrics"]))
        rows.append(row)
    out = io.StringIO()
    head = {"from": report["from"], "to": report["to"], "tz": report["tz"], "by": report["by"]}
    columns = [*head, *rows[0]]
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**head, **{k: "" if v is None else v for k, v in row.items()}})
    return out.getvalue()


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


RENDER = {"json": to_json, "csv": to_csv, "text": to_text}


def _slack_label(group: dict[str, Any]) -> str:
    label = group_label(group, slack=True)
    # A mention stays a mention; anything else a customer or an agent may have typed is escaped.
    return label if label.startswith("<@") else escape(label)


def slack_blocks(report: dict[str, Any], max_groups: int = 20) -> list[dict[str, Any]]:
    """Block Kit: a header, the desk's figures, then one section per group (small groups
    greyed as context blocks, never hidden). Slack allows 50 blocks a message."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title(report)[:150]}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "\n".join(
                    escape(x)
                    for x in [*metric_lines(report["metrics"]), self_service_line(report)]
                    if x
                ),
            },
        },
    ]
    groups = report["groups"]
    for g in groups[:max_groups]:
        body = f"*{_slack_label(g)}*\n" + "\n".join(escape(x) for x in metric_lines(g["metrics"]))
        if g["low_n"]:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": body}]})
        else:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": body}})
    if len(groups) > max_groups:
        more = f"… and {len(groups) - max_groups} more groups: `deskbot report` lists them all"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
    notes = " · ".join(report["notes"])
    if notes:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(notes)}]})
    return blocks
