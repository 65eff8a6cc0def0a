"""The report's section "Does the explanation hold?", from verification.json alone.

`verification_section(verification)`: the verdict sentence, the provenance line, one row per
claim (status badge, the deciding test, its number with its interval, the reason), the
completeness scatter and the scrubbing bars (`verify_figures`), then the criteria, the
statistical tests, the red-team checks and the thresholds as tables. `headline(verification)`
is the report's opening sentence when the run folder has verification.json.

No script and no URL; badges are the report's `verdict-*` classes; every string passes through
`esc`, every number through `fmt` (an `Estimate` through `estimate_text`).
"""

from __future__ import annotations

from collections.abc import Sequence

from wildcircuits.report.sections import badge, checks_table, missing, table
from wildcircuits.report.svg import esc, fmt
from wildcircuits.report.verify_figures import completeness_svg, estimate_text, scrub_bars_svg
from wildcircuits.results.verify import Criteria, Estimate, StatTest, Verification


def p_value_text(p: float) -> str:
    """A p-value for people: three decimals, `< 0.001` below that."""
    return "< 0.001" if 0 <= p < 0.001 else fmt(p, 3)


def value_header(estimates: Sequence[Estimate | None]) -> str:
    """`value [95% interval]` when every interval shown has that level, else `value [interval]`."""
    levels = {e.interval.level for e in estimates if e is not None and e.interval is not None}
    return f"value [{levels.pop():.0%} interval]" if len(levels) == 1 else "value [interval]"


# tables ---------------------------------------------------------------------------------------
def _criteria(c: Criteria) -> str:
    flagged = [m for m in c.minimality if m.flagged]
    worst = "n/a" if c.worst is None else f"{c.worst.label}: {estimate_text(c.worst.completeness)}"
    names = ", ".join(f"{m.pair.name} ({estimate_text(m.value)})" for m in flagged)
    rows = [
        ["F(M): the model", estimate_text(c.f_model)],
        ["F(C): the circuit", estimate_text(c.f_circuit)],
        ["faithfulness |F(M) - F(C)|", estimate_text(c.faithfulness)],
        ["relative faithfulness F(C) / F(M)", estimate_text(c.relative_faithfulness)],
        ["worst completeness |F(C \\ K) - F(M \\ K)|", worst],
        [f"flagged members ({len(flagged)} of {len(c.minimality)})", names or "none"],
    ]
    members = [
        [
            m.pair.name,
            ", ".join(p.name for p in m.knocked_out) or "{}",
            estimate_text(m.value),
            badge("fail" if m.flagged else "pass"),
        ]
        for m in c.minimality
    ]
    detail = table(["member v", "K", "|F(C \\ (K + v)) - F(C \\ K)|", "minimal"], members, {2})
    return (
        table(["criterion", value_header([c.f_model, c.f_circuit, c.faithfulness])], rows, {1})
        + f"<details><summary>Minimality of all {len(c.minimality)} members</summary>{detail}"
        "</details>"
    )


def _tests(tests: Sequence[StatTest]) -> str:
    if not tests:
        return missing("No statistical test was run.")
    header = ["test", "question", "statistic", "p-value", "level", "result", "scheme"]
    rows = [
        [
            t.name,
            t.question,
            t.statistic,
            p_value_text(t.p_value),
            t.level,
            badge("pass" if t.passed else "fail"),
            t.scheme,
        ]
        for t in tests
    ]
    return table(header, rows, {2, 3, 4})


def _claims(v: Verification) -> str:
    rows = [
        [c.claim, badge(c.status.value), c.test, estimate_text(c.value), c.reason] for c in v.claims
    ]
    if not rows:
        return missing("The hypothesis states no claim.")
    header = ["claim", "status", "decided by", value_header([c.value for c in v.claims]), "reason"]
    return f'<div id="verify-claims">{table(header, rows, {3})}</div>'


def provenance_line(v: Verification) -> str:
    """ablation, metric, split, prompts, seed, model: how every number here was obtained."""
    p, c = v.provenance, v.criteria
    n = next((p[k] for k in ("n_prompts", "n_examples", "n") if p.get(k) is not None), None)
    parts = [
        ("ablation", c.ablation or p.get("ablation")),
        ("metric", c.metric or p.get("metric")),
        ("split", p.get("split")),
        ("prompts", n),
        ("seed", p.get("seed", c.seed)),
        ("model", p.get("model")),
        ("quantization", p.get("quantization")),
        ("hypothesis", v.hypothesis.get("source")),
    ]
    return "; ".join(f"{k} {fmt(x)}" for k, x in parts if x not in (None, ""))


def _costs(v: Verification) -> str:
    c, s = v.criteria, v.scrubbing
    parts = [f"criteria {fmt(c.forwards)} forwards ({fmt(c.naive_forwards)} one at a time)"]
    if s is not None:
        parts.append(f"scrubbing {fmt(s.forwards)} forwards")
    parts += [f"{k} {fmt(x, 1)} s" for k, x in v.seconds.items()]
    return "; ".join(parts)


def headline(v: Verification) -> str:
    """The report's opening sentence: the verdict."""
    return f"Does the explanation hold? {v.verdict}"


def _scrubbing(v: Verification) -> str:
    s = v.scrubbing
    if s is None:
        return missing("Causal scrubbing was not run.")
    caption = f"Metric of the model {fmt(s.m_model)}, fully resampled {fmt(s.m_random)}; "
    caption += f"seed {s.seed}. Hover a bar for the prompts it used."
    return (
        f'<div class="figure-box">{scrub_bars_svg(s)}</div>'
        f'<p class="caption">{esc(caption)}</p><details><summary>The scrubbing convention'
        f'</summary><p class="note">{esc(s.convention)}</p></details>'
    )


def _completeness(c: Criteria) -> str:
    caption = (
        f"One point per knocked-out set K (each class, {c.n_random} random subsets, the greedy "
        "worst set); a complete circuit keeps every point on y = x, and completeness is the "
        "distance |F(C \\ K) - F(M \\ K)|; lines: the intervals. Hover a point for its K."
    )
    return (
        f'<div class="figure-box">{completeness_svg(c.completeness, c.worst)}</div>'
        f'<p class="caption">{esc(caption)}</p>'
    )


def verification_section(v: Verification) -> str:
    """The "Does the explanation hold?" section body (HTML fragment)."""
    thresholds = "; ".join(f"{k} = {fmt(x)}" for k, x in v.thresholds.items()) or "none stated"
    checks = checks_table(v.checks) if v.checks else missing("No red-team check was run.")
    parts = (
        f'<p class="verdict-sentence"><b>{esc(v.verdict)}</b></p>',
        f'<p class="caption">{esc(provenance_line(v))}</p>',
        "<h3>Claims</h3>",
        _claims(v),
        "<h3>Completeness: the circuit and the model with the same set K knocked out</h3>",
        _completeness(v.criteria),
        "<h3>Causal scrubbing: loss recovered</h3>",
        _scrubbing(v),
        "<h3>Criteria (Wang et al. 2023)</h3>",
        _criteria(v.criteria),
        "<h3>Statistical tests (Shi et al. 2024)</h3>",
        _tests(v.tests),
        "<h3>Red-team checks</h3>",
        checks,
        f'<p class="caption">Thresholds (the same for every run): {esc(thresholds)}.</p>',
        f'<p class="caption">Cost: {esc(_costs(v))}.</p>',
    )
    return "".join(parts)


__all__ = ["estimate_text", "headline", "provenance_line", "verification_section"]
