"""Attention flow (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"), exact, with networkx.

The attention graph has a node for every token at every layer boundary (L + 1 rows of N nodes). Each
block adds an edge from token i above to token j below with capacity Â[i, j], where Â is the head mean of
the attention with the residual connection added, A ← (A + I) rows renormalised, as in their code. A
patch's flow is the maximum flow from the class token at the top to that patch at the bottom; the
flows are divided by their sum over all input tokens, as in their code. A model without a class token
starts from a super-source joined to every top token with capacity 1/N.

One max-flow on the bundled model's graph (145 tokens, 6 layers, 126k edges) takes about two seconds,
and a map needs one per patch, so the method is refused above a cost that keeps one image under ~10 s
(`max_tokens`). Rollout is the cheap approximation the same paper proposes.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
from networkx.algorithms.flow import build_residual_network, shortest_augmenting_path

from vit_core.capture import Capture
from vit_core.errors import VitCoreError
from vit_core.maps import patch_map

# layers × tokens³ (edges × flows per image): 6 × 65³ took 7 s and 12 × 50³ 6.7 s on this project's 2-core CPU
FLOW_BUDGET = 2_000_000


def max_tokens(layers: int) -> int:
    """The most tokens (prefix + patches) whose exact flow map fits the budget at this depth."""
    tokens = int(round((FLOW_BUDGET / max(layers, 1)) ** (1 / 3)))
    while layers * tokens**3 > FLOW_BUDGET:
        tokens -= 1
    return tokens


def check_flow_size(layers: int, tokens: int) -> None:
    limit = max_tokens(layers)
    if tokens > limit:
        raise VitCoreError("flow_too_large", tokens=tokens, layers=layers, limit=limit)


def flow_graph(attentions: np.ndarray) -> nx.DiGraph:
    """The layered attention graph of `[layer, head, N, N]` weights: node (l, i) is token i entering block l
    (l = L: the output); edge (l + 1, i) -> (l, j) has capacity Â_l[i, j]."""
    fused = attentions.astype(np.float64).mean(axis=1)  # [L, N, N]
    tokens = fused.shape[-1]
    mixed = fused + np.eye(tokens)
    mixed /= mixed.sum(axis=-1, keepdims=True)  # (A + I) with rows renormalised
    graph = nx.DiGraph()
    for layer, matrix in enumerate(mixed):
        rows, cols = np.nonzero(matrix)
        graph.add_edges_from(
            ((layer + 1, int(i)), (layer, int(j)), {"capacity": float(matrix[i, j])})
            for i, j in zip(rows, cols, strict=True)
        )
    return graph


def attention_flow(capture: Capture) -> np.ndarray:
    """Flow from the class token (or all tokens) at the top to every patch at the bottom, `[rows, cols]`."""
    layers, _, tokens, _ = capture.attentions.shape
    check_flow_size(layers, tokens)
    graph = flow_graph(capture.attentions)
    source: object = (layers, 0)
    if not capture.has_class_token:
        source = "source"
        graph.add_edges_from((source, (layers, i), {"capacity": 1.0 / tokens}) for i in range(tokens))
    residual = build_residual_network(graph, "capacity")  # built once, reused by every max-flow
    flows = np.array(
        [
            nx.maximum_flow_value(graph, source, (0, j), flow_func=shortest_augmenting_path, residual=residual)
            for j in range(tokens)
        ]
    )  # [N], into every input token
    total = flows.sum()
    return patch_map(flows / total if total > 0 else flows, capture)
