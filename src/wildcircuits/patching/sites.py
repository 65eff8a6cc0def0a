"""Sites: typed names for the values of a forward pass that can be read or replaced.

A `Site` is a frozen value (component, layer, head, position), built with one constructor per
component (`Site.z(3, head=2)`, `Site.resid_pre(5, position=-1)`, `Site.logits()`) or directly.
Strings exist only at the CLI and file boundaries, through the `parse_site` / `format_site` pair
(the layer and head read as in the display form of wildcircuits.names, `L3.H2`):

    "embed", "logits", "final_resid"           no layer
    "resid_pre.L3", "mlp_out.L0"               one layer
    "z.L3.H2", "pattern.L5.H1", "k.L4.H0"      one head (for k / v: a KV head)
    "resid_post.L7@5", "z.L3.H2@-1"            one position (negative counts from the end)

Shapes (batch, pos, ...) of each component are listed in `SHAPES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from wildcircuits.errors import SiteError
from wildcircuits.names import SiteParts, join_site, split_site


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

    # constructors, one per component; `position=None` means every position ------------------
    @classmethod
    def embed(cls, *, position: int | None = None) -> Site:
        """Token embeddings: (batch, pos, d_model)."""
        return cls(Component.EMBED, position=position)

    @classmethod
    def pos_embed(cls, *, position: int | None = None) -> Site:
        """Learned positional embeddings: (batch, pos, d_model)."""
        return cls(Component.POS_EMBED, position=position)

    @classmethod
    def final_resid(cls, *, position: int | None = None) -> Site:
        """The residual stream after the last layer: (batch, pos, d_model)."""
        return cls(Component.FINAL_RESID, position=position)

    @classmethod
    def logits(cls, *, position: int | None = None) -> Site:
        """The output logits: (batch, pos, vocab)."""
        return cls(Component.LOGITS, position=position)

    @classmethod
    def resid_pre(cls, layer: int, *, position: int | None = None) -> Site:
        """The residual stream entering the layer: (batch, pos, d_model)."""
        return cls(Component.RESID_PRE, layer, position=position)

    @classmethod
    def attn_in(cls, layer: int, *, position: int | None = None) -> Site:
        """The attention input (after the norm): (batch, pos, d_model)."""
        return cls(Component.ATTN_IN, layer, position=position)

    @classmethod
    def attn_out(cls, layer: int, *, position: int | None = None) -> Site:
        """The attention output added to the stream: (batch, pos, d_model)."""
        return cls(Component.ATTN_OUT, layer, position=position)

    @classmethod
    def resid_mid(cls, layer: int, *, position: int | None = None) -> Site:
        """The stream between attention and MLP (sequential blocks): (batch, pos, d_model)."""
        return cls(Component.RESID_MID, layer, position=position)

    @classmethod
    def mlp_in(cls, layer: int, *, position: int | None = None) -> Site:
        """The MLP input (after the norm): (batch, pos, d_model)."""
        return cls(Component.MLP_IN, layer, position=position)

    @classmethod
    def mlp_out(cls, layer: int, *, position: int | None = None) -> Site:
        """The MLP output added to the stream: (batch, pos, d_model)."""
        return cls(Component.MLP_OUT, layer, position=position)

    @classmethod
    def resid_post(cls, layer: int, *, position: int | None = None) -> Site:
        """The residual stream leaving the layer: (batch, pos, d_model)."""
        return cls(Component.RESID_POST, layer, position=position)

    @classmethod
    def q(cls, layer: int, head: int | None = None, *, position: int | None = None) -> Site:
        """Queries: (batch, pos, head, d_head)."""
        return cls(Component.Q, layer, head, position)

    @classmethod
    def k(cls, layer: int, head: int | None = None, *, position: int | None = None) -> Site:
        """Keys (head: a KV head): (batch, pos, kv_head, d_head)."""
        return cls(Component.K, layer, head, position)

    @classmethod
    def v(cls, layer: int, head: int | None = None, *, position: int | None = None) -> Site:
        """Values (head: a KV head): (batch, pos, kv_head, d_head)."""
        return cls(Component.V, layer, head, position)

    @classmethod
    def attn_scores(
        cls, layer: int, head: int | None = None, *, position: int | None = None
    ) -> Site:
        """Attention scores before the softmax: (batch, head, pos, kv_pos)."""
        return cls(Component.ATTN_SCORES, layer, head, position)

    @classmethod
    def pattern(cls, layer: int, head: int | None = None, *, position: int | None = None) -> Site:
        """The attention pattern: (batch, head, pos, kv_pos)."""
        return cls(Component.PATTERN, layer, head, position)

    @classmethod
    def z(cls, layer: int, head: int | None = None, *, position: int | None = None) -> Site:
        """The attention-weighted values: (batch, pos, head, d_head)."""
        return cls(Component.Z, layer, head, position)

    @classmethod
    def result(cls, layer: int, head: int | None = None, *, position: int | None = None) -> Site:
        """Each head's output in the residual basis: (batch, pos, head, d_model)."""
        return cls(Component.RESULT, layer, head, position)


def parse_component(name: str) -> Component:
    """Component from its name; unknown names raise and list the valid ones."""
    try:
        return Component(name)
    except ValueError:
        valid = ", ".join(c.value for c in Component)
        raise SiteError(f"unknown site component {name!r}; valid components: {valid}") from None


def parse_site(text: str) -> Site:
    """Parse `component[.L<layer>][.H<head>][@<position>]` into a `Site`."""
    parts = split_site(text)
    if parts is None:
        raise SiteError(
            f"cannot parse site {text!r}; expected component[.L<layer>][.H<head>][@<position>], "
            "e.g. 'resid_pre.L3', 'z.L5.H2', 'resid_post.L7@-1'"
        )
    component = parse_component(parts.component)
    return Site(component, layer=parts.layer, head=parts.head, position=parts.position)


def format_site(site: Site) -> str:
    """Inverse of `parse_site`."""
    return join_site(SiteParts(site.component.value, site.layer, site.head, site.position))


def head_axis(component: Component) -> int:
    """Axis of the head dimension in the component's value."""
    return 1 if component in ATTENTION_MAP_COMPONENTS else 2


def position_axis(component: Component) -> int:
    """Axis of the (query) position dimension in the component's value."""
    return 2 if component in ATTENTION_MAP_COMPONENTS else 1
