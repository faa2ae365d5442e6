"""The census of a sweep: minimum ratio against loss at each critical point,
as points and as an SVG scatter plot drawn without a plotting library."""

import html
import math
from collections.abc import Callable, Sequence

from pydantic import BaseModel, Field

from saddlepoint.analysis import CriticalPointAnalysis, Verdict
from saddlepoint.records import ExperimentRecord

WIDTH, HEIGHT = 640, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 150, 30, 55
COLORS = {
    Verdict.LOCAL_MINIMUM: "#1b9e77",
    Verdict.SADDLE_POINT: "#d95f02",
    Verdict.DEGENERATE: "#7570b3",
    Verdict.LOCAL_MAXIMUM: "#e7298a",
    Verdict.NOT_CRITICAL: "#999999",
}


class CensusPoint(BaseModel):
    """One child's critical point: its position and its Hessian's verdict."""

    experiment_id: str
    values: dict[str, object] = Field(description="The child's varied values.")
    loss: float
    minimum_ratio: float | None
    verdict: Verdict
    gradient_norm: float
    gradient_flat_share: float | None = Field(
        description="Share of the gradient in zero-curvature directions."
    )
    search_converged: bool | None


class Census(BaseModel):
    sweep_id: str
    points: list[CensusPoint]
    pending: int = Field(description="Children without an analysis yet.")


def census_point(
    record: ExperimentRecord,
    values: dict[str, object],
    analysis: CriticalPointAnalysis,
) -> CensusPoint:
    search = analysis.search
    return CensusPoint(
        experiment_id=record.id,
        values=values,
        loss=analysis.loss,
        minimum_ratio=analysis.minimum_ratio,
        verdict=analysis.verdict,
        gradient_norm=analysis.gradient_norm,
        gradient_flat_share=analysis.gradient_flat_share,
        search_converged=None if search is None else search.converged,
    )


def render_svg(census: Census, title: str) -> str:
    """Draw minimum ratio (x, 0 to 1) against training loss (y) as SVG."""
    points = [p for p in census.points if p.minimum_ratio is not None]
    losses = [p.loss for p in points] or [0.0, 1.0]
    low, high = min(losses), max(losses)
    if math.isclose(low, high):
        low, high = low - 0.5, high + 0.5
    pad = 0.05 * (high - low)
    low, high = low - pad, high + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_of(ratio: float) -> float:
        return LEFT + ratio * plot_w

    def y_of(loss: float) -> float:
        return TOP + (high - loss) / (high - low) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="18" font-size="14">{html.escape(title)}</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" '
        'fill="none" stroke="black"/>',
    ]
    parts += _ticks(x_of, y_of, low, high)
    for point in points:
        assert point.minimum_ratio is not None
        parts.append(
            f'<circle cx="{x_of(point.minimum_ratio):.1f}" '
            f'cy="{y_of(point.loss):.1f}" r="4" fill="{COLORS[point.verdict]}" '
            f'fill-opacity="0.8"><title>{point.experiment_id}: '
            f"{point.verdict.value}</title></circle>"
        )
    if not points:
        parts.append(
            f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" '
            'text-anchor="middle">no child has an analysis yet: children '
            f"pending {census.pending}</text>"
        )
    parts += _legend()
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _ticks(
    x_of: Callable[[float], float],
    y_of: Callable[[float], float],
    low: float,
    high: float,
) -> Sequence[str]:
    parts = []
    for tick in range(6):
        ratio = tick / 5
        x = x_of(ratio)
        parts.append(
            f'<line x1="{x:.1f}" y1="{HEIGHT - BOTTOM}" x2="{x:.1f}" '
            f'y2="{HEIGHT - BOTTOM + 5}" stroke="black"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 18}" '
            f'text-anchor="middle">{ratio:.1f}</text>'
        )
        loss = low + (high - low) * tick / 5
        y = y_of(loss)
        parts.append(
            f'<line x1="{LEFT - 5}" y1="{y:.1f}" x2="{LEFT}" y2="{y:.1f}" '
            'stroke="black"/>'
        )
        parts.append(
            f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{loss:.3g}</text>'
        )
    parts.append(
        f'<text x="{LEFT + (WIDTH - LEFT - RIGHT) / 2}" y="{HEIGHT - 12}" '
        'text-anchor="middle">minimum ratio (positive eigenvalues / all)</text>'
    )
    parts.append(
        f'<text x="16" y="{TOP + (HEIGHT - TOP - BOTTOM) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + (HEIGHT - TOP - BOTTOM) / 2})">'
        "training loss</text>"
    )
    return parts


def _legend() -> list[str]:
    parts = []
    for row, (verdict, color) in enumerate(COLORS.items()):
        y = TOP + 12 + row * 18
        x = WIDTH - RIGHT + 15
        parts.append(f'<circle cx="{x}" cy="{y - 4}" r="4" fill="{color}"/>')
        parts.append(f'<text x="{x + 10}" y="{y}">{verdict.value}</text>')
    return parts
