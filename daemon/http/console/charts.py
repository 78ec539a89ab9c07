"""Small charts as inline SVG: drawn on the server, no script, no CDN (the console works
without internet, and its Content-Security-Policy allows no script anyway).

Colours come from the stylesheet through classes (inline ``style`` would be refused by
the policy); sizes are in the viewBox, so the charts scale with the page.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape


def bars(values: Sequence[float], *, label: str, width: int = 240, height: int = 48) -> Markup:
    """A bar per value (e.g. sends per minute, oldest first), scaled to the largest."""
    top = max(values, default=0) or 1
    step = width / max(len(values), 1)
    rects = []
    for i, value in enumerate(values):
        h = 0 if value <= 0 else max(1.0, value / top * (height - 2))
        rects.append(
            f'<rect class="bar" x="{i * step:.1f}" y="{height - h:.1f}" '
            f'width="{max(step - 1, 1):.1f}" height="{h:.1f}"><title>{value:g}</title></rect>'
        )
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}" preserveAspectRatio="none">'
        f'<line class="axis" x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}"/>'
        + "".join(rects)
        + "</svg>"
    )


def gauge(rate: float, threshold: float, *, label: str, width: int = 240) -> Markup:
    """A horizontal bar of ``rate`` against ``threshold`` (the bar is full at twice the
    threshold); ``over`` colours it once the threshold is reached."""
    full = threshold * 2 or 1
    filled = min(rate / full, 1.0) * width
    mark = width / 2
    state = "over" if rate >= threshold else ("near" if rate >= threshold / 2 else "ok")
    return Markup(
        f'<svg class="gauge" viewBox="0 0 {width} 12" role="img" aria-label="{escape(label)}">'
        f'<rect class="track" x="0" y="2" width="{width}" height="8" rx="4"/>'
        f'<rect class="fill {state}" x="0" y="2" width="{filled:.1f}" height="8" rx="4"/>'
        f'<line class="threshold" x1="{mark}" y1="0" x2="{mark}" y2="12"/></svg>'
    )
