"""The slow, obvious edge-patching reference the fast engine (`patching.edges`) is tested
against: every receiver's input rebuilt from per-sender outputs, head by head, with the model's
own projection modules. `reference_run` takes the value each receiver reads from each sender
as a function (causal scrubbing picks it per token); `edge_patching_reference` is its
(receiver, sender) mask case."""

from __future__ import annotations

import torch

from wildcircuits.graph.graph import Graph
from wildcircuits.models.adapters import get_module
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.tasks.metrics import at_positions


def edge_patching_reference(
    model: InstrumentedModel, graph: Graph, tokens, ablated, ablation, positions
):
    """Slow and obvious: build every receiver's input from per-sender outputs, head by head,
    using the model's own projection modules."""

    def edge_value(row: int, sender: int, own: torch.Tensor) -> torch.Tensor:
        return ablation[:, :, sender] if ablated[row, sender] else own

    return reference_run(model, graph, tokens, edge_value, positions)[0]


def reference_run(model: InstrumentedModel, graph: Graph, tokens, edge_value, positions):
    """(logits at positions, {sender: (batch, pos, d_model) output}): receiver `row` reads
    edge_value(row, sender, that sender's output in this run) from each upstream sender."""
    outputs: dict[int, torch.Tensor] = {}
    biases = torch.zeros(model.d_model)
    embed = model.embed(tokens)
    outputs[0] = embed
    masks = model.attention_masks(tokens, embed)
    rotary = model.rotary_embeddings(tokens, embed)

    def receiver_input(row: int, constant: torch.Tensor) -> torch.Tensor:
        total = constant.expand_as(embed).clone()
        for s in range(graph.n_upstream(graph.receivers[row])):
            total = total + edge_value(row, s, outputs[s])
        return total

    group = model.n_heads // model.n_kv_heads
    for layer in range(model.n_layers):
        block = model.layer_module(layer)
        attn = get_module(block, model.adapter.attention)
        out_proj = get_module(attn, model.adapter.out_proj)
        kind = model.layer_types[layer]
        rows = range(*graph.attention_receivers(layer).indices(graph.n_receivers))
        results = []
        for head in range(model.n_heads):
            slots = []
            for slot in range(3):
                x = receiver_input(rows[slot * model.n_heads + head], biases)
                q, k, v = model.project_qkv(attn, get_module(block, model.adapter.attn_norm)(x))
                if kind in rotary:
                    q, k = model.apply_rotary(q, k, rotary[kind])
                slots.append((q[:, :, head], k[:, :, head // group], v[:, :, head // group])[slot])
            q, k, v = slots  # (batch, pos, d_head) each
            scores = q @ k.transpose(1, 2) * attn.scaling + masks[kind][:, 0]
            z = torch.softmax(scores, dim=-1) @ v  # (batch, pos, d_head)
            z_all = torch.zeros(*z.shape[:2], model.n_heads, model.d_head)
            z_all[:, :, head] = z
            result = out_proj(z_all.flatten(2))
            if out_proj.bias is not None:
                result = result - out_proj.bias
            results.append(result)
        total = torch.stack(results, 2).sum(2)
        if out_proj.bias is not None:
            biases = biases + out_proj.bias
        if model.adapter.post_attn_norm:
            norm = get_module(block, model.adapter.post_attn_norm)
            factor = torch.rsqrt(total.pow(2).mean(-1, keepdim=True) + norm.eps) * (1 + norm.weight)
            results = [r * factor for r in results]
            torch.testing.assert_close(sum(results), norm(total), atol=1e-4, rtol=1e-4)
        for head, result in enumerate(results):
            outputs[graph.head_senders(layer).start + head] = result
        mlp_x = receiver_input(graph.mlp_receiver(layer), biases)
        mlp_out = get_module(block, model.adapter.mlp)(
            get_module(block, model.adapter.mlp_norm)(mlp_x)
        )
        if model.adapter.post_mlp_norm:
            mlp_out = get_module(block, model.adapter.post_mlp_norm)(mlp_out)
        outputs[graph.mlp_sender(layer)] = mlp_out
    final = receiver_input(graph.logits_receiver, biases)
    return model.unembed(at_positions(final, positions)), outputs  # (batch, [k,] vocab)
