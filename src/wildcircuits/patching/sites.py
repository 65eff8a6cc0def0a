"""Sites: typed names for the values of a forward pass that can be read or replaced.

A `Site` is a frozen value (component, layer, head, position). Strings exist only at the CLI and
file boundaries, through the `parse_site` / `format_site` pair:

    "embed", "logits", "final_resid"           no layer
    "resid_pre.L3", "mlp_out.L0"               one layer
    "z.L3.H2", "pattern.L5.H1", "k.L4.H0"      one head (for k / v: a KV head)
    "resid_post.L7@5", "z.L3.H2@-1"            one position (negative counts from the end)

Shapes (batch, pos, ...) of each component are listed in `SHAPES`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from wildcircuits.errors import SiteError


class Component(StrEnum):
    """The kinds of value a forward pass exposes."""

    EMBED = "embed"
    POS_EMBED = "pos_embed"
    RESID_PRE = "resid_pre"
    ATTN_IN = "attn_in"
    Q = "q"
    K = "k"
    V = "v"
    ATTN_SCORES = "attn_scores"
    PATTERN = "pattern"
    Z = "z"
    RESULT = "result"
    ATTN_OUT = "attn_out"
    RESID_MID = "resid_mid"
    MLP_IN = "mlp_in"
    MLP_OUT = "mlp_out"
    RESID_POST = "resid_post"
    FINAL_RESID = "final_resid"
    LOGITS = "logits"


#: Components that exist once per model rather than once per layer.
GLOBAL_COMPONENTS = frozenset(
    {Component.EMBED, Component.POS_EMBED, Component.FINAL_RESID, Component.LOGITS}
)
#: Components with a query-head axis.
HEAD_COMPONENTS = frozenset(
    {Component.Q, Component.Z, Component.RESULT, Component.ATTN_SCORES, Component.PATTERN}
)
#: Components with a key/value-head axis (GQA: fewer KV heads than query heads).
KV_HEAD_COMPONENTS = frozenset({Component.K, Component.V})
#: Components whose head axis is 1 and query-position axis is 2 (batch, head, pos, kv_pos).
ATTENTION_MAP_COMPONENTS = frozenset({Component.ATTN_SCORES, Component.PATTERN})

#: Shape of each component's value.
SHAPES: dict[Component, str] = {
    Component.EMBED: "(batch, pos, d_model)",
    Component.POS_EMBED: "(batch, pos, d_model)",
    Component.RESID_PRE: "(batch, pos, d_model)",
    Component.ATTN_IN: "(batch, pos, d_model)",
    Component.Q: "(batch, pos, head, d_head)",
    Component.K: "(batch, pos, kv_head, d_head)",
    Component.V: "(batch, pos, kv_head, d_head)",
    Component.ATTN_SCORES: "(batch, head, pos, kv_pos)",
    Component.PATTERN: "(batch, head, pos, kv_pos)",
    Component.Z: "(batch, pos, head, d_head)",
    Component.RESULT: "(batch, pos, head, d_model)",
    Component.ATTN_OUT: "(batch, pos, d_model)",
    Component.RESID_MID: "(batch, pos, d_model)",
    Component.MLP_IN: "(batch, pos, d_model)",
    Component.MLP_OUT: "(batch, pos, d_model)",
    Component.RESID_POST: "(batch, pos, d_model)",
    Component.FINAL_RESID: "(batch, pos, d_model)",
    Component.LOGITS: "(batch, pos, vocab)",
}


@dataclass(frozen=True)
class Site:
    """One place in the forward pass.

    `layer` is required for per-layer components and must be None otherwise. `head` selects one
    query head (or one KV head for k / v); `position` one query position (negative counts from the
    end of the padded sequence). None means "all".
    """

    component: Component
    layer: int | None = None
    head: int | None = None
    position: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.component, Component):
            object.__setattr__(self, "component", parse_component(str(self.component)))
        is_global = self.component in GLOBAL_COMPONENTS
        if is_global and self.layer is not None:
            raise SiteError(f"{self.component.value} has no layer; drop layer={self.layer}")
        if not is_global and self.layer is None:
            raise SiteError(f"{self.component.value} is per layer: give layer=")
        has_heads = self.component in HEAD_COMPONENTS | KV_HEAD_COMPONENTS
        if self.head is not None and not has_heads:
            raise SiteError(
                f"{self.component.value} has no head axis; heads exist for "
                f"{sorted(c.value for c in HEAD_COMPONENTS | KV_HEAD_COMPONENTS)}"
            )

    @property
    def key(self) -> tuple[Component, int | None]:
        """The (component, layer) a forward pass computes as one tensor."""
        return (self.component, self.layer)

    def __str__(self) -> str:
        return format_site(self)


def parse_component(name: str) -> Component:
    """Component from its name; unknown names raise and list the valid ones."""
    try:
        return Component(name)
    except ValueError:
        valid = ", ".join(c.value for c in Component)
        raise SiteError(f"unknown site component {name!r}; valid components: {valid}") from None


_SITE_PATTERN = re.compile(
    r"^(?P<component>[a-z_]+)(?:\.L(?P<layer>\d+))?(?:\.H(?P<head>\d+))?(?:@(?P<position>-?\d+))?$"
)


def parse_site(text: str) -> Site:
    """Parse `component[.L<layer>][.H<head>][@<position>]` into a `Site`."""
    match = _SITE_PATTERN.match(text.strip())
    if match is None:
        raise SiteError(
            f"cannot parse site {text!r}; expected component[.L<layer>][.H<head>][@<position>], "
            "e.g. 'resid_pre.L3', 'z.L5.H2', 'resid_post.L7@-1'"
        )
    layer, head, position = (match.group(g) for g in ("layer", "head", "position"))
    return Site(
        parse_component(match.group("component")),
        layer=None if layer is None else int(layer),
        head=None if head is None else int(head),
        position=None if position is None else int(position),
    )


def format_site(site: Site) -> str:
    """Inverse of `parse_site`."""
    text = site.component.value
    if site.layer is not None:
        text += f".L{site.layer}"
    if site.head is not None:
        text += f".H{site.head}"
    if site.position is not None:
        text += f"@{site.position}"
    return text


def head_axis(component: Component) -> int:
    """Axis of the head dimension in the component's value."""
    return 1 if component in ATTENTION_MAP_COMPONENTS else 2


def position_axis(component: Component) -> int:
    """Axis of the (query) position dimension in the component's value."""
    return 2 if component in ATTENTION_MAP_COMPONENTS else 1
