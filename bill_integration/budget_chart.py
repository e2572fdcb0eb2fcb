"""The admin budget page's chart: server-side SVG, no script, no library, no CDN.

:func:`budget_svg` draws one developer key's last 24 hours (``services/budget.py``) as stacked
bars per clock hour, one colour per kind of call, with horizontal lines for BILL's hourly
limit and the upkeep share. It is accessible on its own terms: ``role="img"`` with a
``<title>`` and a ``<desc>`` that says what the chart shows and its largest figures, a
``<title>`` (tooltip) on every bar segment, and the page puts the same numbers in a table
beside it (the text alternative).

Colours are the Okabe-Ito palette (distinguishable with the common colour-vision
deficiencies), and the legend also names each kind in text. Every text drawn is escaped.

Scale: the bars decide it (the busiest hour and a fifth more). A limit line is drawn when it is
within four times the busiest hour, so a key near its limits shows them to scale; a key far
below them gets a note saying the lines are above the chart, instead of flat bars under a
20,000 line.
"""

from __future__ import annotations

import math
from datetime import datetime

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _

from .services.budget import KIND_LABELS, KeyBudget

WIDTH, HEIGHT = 880, 360
LEFT, RIGHT, TOP, BOTTOM = 72, 190, 40, 56
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
#: One colour per kind, in KIND_LABELS' order (Okabe-Ito).
COLOURS = ("#0072B2", "#56B4E9", "#E69F00", "#009E73", "#999999")
LIMIT_COLOUR, UPKEEP_COLOUR, TEXT, GRID = "#D55E00", "#6A3D9A", "#1f2933", "#d9dee3"
#: A limit line is drawn when it is at most this many times the busiest hour.
LINE_REACH = 4


def nice_step(top: float, ticks: int = 5) -> int:
    """A round tick step (1, 2 or 5 times a power of ten) giving about ``ticks`` ticks."""
    raw = max(top / ticks, 1)
    power = 10 ** math.floor(math.log10(raw))
    return int(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def _number(value: int) -> str:
    return f"{value:,}"


def _text(x: float, y: float, content: str, **attrs: str) -> str:
    extra = "".join(f' {name.replace("_", "-")}="{escape(v)}"' for name, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{escape(content)}</text>'


def _hour(moment: datetime) -> str:
    return moment.strftime("%H:00")


def budget_svg(report: KeyBudget) -> SafeString:
    """The chart of ``report`` as an inline ``<svg>`` element."""
    busiest = report.busiest_hour
    lines = [
        (report.call_limit, LIMIT_COLOUR, _("BILL's limit"), "8 4"),
        (report.upkeep_limit, UPKEEP_COLOUR, _("upkeep share"), "3 3"),
    ]
    shown = [line for line in lines if line[0] <= max(busiest, 1) * LINE_REACH]
    top = max([busiest * 1.2, 10, *(value * 1.08 for value, *_rest in shown)])
    step = nice_step(top)
    top = step * math.ceil(top / step)

    def y(value: float) -> float:
        return TOP + PLOT_H - value / top * PLOT_H

    title = _("Calls per hour to BILL, developer key %(key)s, last 24 hours") % {
        "key": report.label
    }
    desc = _(
        "Stacked bars, one per clock hour (UTC), by kind of call. Busiest hour: %(busiest)s "
        "calls. BILL allows %(limit)s calls an hour; the upkeep share is %(upkeep)s. The "
        "table below the chart has every number."
    ) % {
        "busiest": _number(busiest),
        "limit": _number(report.call_limit),
        "upkeep": _number(report.upkeep_limit),
    }
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="bill-budget-chart" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'aria-labelledby="bill-chart-title bill-chart-desc" font-family="system-ui, sans-serif" '
        f'font-size="12" fill="{TEXT}">',
        f'<title id="bill-chart-title">{escape(title)}</title>',
        f'<desc id="bill-chart-desc">{escape(desc)}</desc>',
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        _text(LEFT, 22, title, font_size="14", font_weight="600"),
    ]
    # Grid and the y axis's ticks.
    for value in range(0, top + 1, step):
        out.append(
            f'<line x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'stroke="{GRID}" stroke-width="1"/>'
        )
        out.append(_text(LEFT - 8, y(value) + 4, _number(value), text_anchor="end"))
    out.append(
        _text(
            18,
            TOP + PLOT_H / 2,
            _("calls per hour"),
            text_anchor="middle",
            transform=f"rotate(-90 18 {TOP + PLOT_H / 2:.1f})",
        )
    )
    # Bars, stacked bottom-up in KIND_LABELS' order; the running hour drawn lighter.
    slot = PLOT_W / max(len(report.hours), 1)
    width = slot * 0.72
    for index, hour in enumerate(report.hours):
        x = LEFT + index * slot + (slot - width) / 2
        base = 0
        partial = index == len(report.hours) - 1
        group = f'<g class="bar" data-hour="{_hour(hour.start)}"'
        out.append(group + (' opacity="0.55">' if partial else ">"))
        for (kind, label), colour in zip(KIND_LABELS, COLOURS, strict=True):
            value = getattr(hour, kind)
            if not value:
                continue
            tip = f"{_hour(hour.start)} UTC, {label}: {_number(value)}"
            out.append(
                f'<rect class="segment" data-kind="{kind}" x="{x:.1f}" '
                f'y="{y(base + value):.1f}" width="{width:.1f}" '
                f'height="{max(y(base) - y(base + value), 0.5):.1f}" fill="{colour}">'
                f"<title>{escape(tip)}</title></rect>"
            )
            base += value
        out.append("</g>")
        if index % 3 == 0 or partial:
            tick = _("now") if partial else _hour(hour.start)
            out.append(_text(x + width / 2, TOP + PLOT_H + 16, tick, text_anchor="middle"))
    out.append(
        f'<line x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{TOP + PLOT_H}" y2="{TOP + PLOT_H}" '
        f'stroke="{TEXT}" stroke-width="1"/>'
    )
    out.append(
        _text(
            LEFT + PLOT_W / 2,
            HEIGHT - 12,
            _("clock hour (UTC); the last bar is the hour still running"),
            text_anchor="middle",
        )
    )
    # BILL's limit and the upkeep share, where they are in range.
    for value, colour, _name, dash in shown:
        out.append(
            f'<line class="limit" x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{y(value):.1f}" '
            f'y2="{y(value):.1f}" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>'
        )
    # Legend: kinds, then the lines (text for each, not colour alone).
    lx, ly = LEFT + PLOT_W + 20, TOP + 4
    out.append(_text(lx, ly, _("kind of call"), font_weight="600"))
    for row, ((_kind, label), colour) in enumerate(zip(KIND_LABELS, COLOURS, strict=True)):
        top_y = ly + 12 + row * 20
        out.append(f'<rect x="{lx}" y="{top_y}" width="12" height="12" fill="{colour}"/>')
        out.append(_text(lx + 18, top_y + 10, str(label)))
    ly += 12 + len(KIND_LABELS) * 20 + 14
    for value, colour, name, dash in lines:
        out.append(
            f'<line x1="{lx}" x2="{lx + 12}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" '
            f'stroke-width="2" stroke-dasharray="{dash}"/>'
        )
        out.append(_text(lx + 18, ly, f"{name}: {_number(value)}/h"))
        ly += 20
    hidden = [str(line[2]) for line in lines if line not in shown]
    if hidden:
        note = _("%(lines)s: above this scale") % {"lines": ", ".join(hidden)}
        out.append(_text(lx, ly + 4, note, font_style="italic"))
    out.append("</svg>")
    return mark_safe("".join(out))  # noqa: S308 - every text above went through escape()
