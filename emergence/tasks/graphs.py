"""Graph algorithms from the quiet-features study: BFS, DFS, shortest path, topological sort and MST.

Every task works on a connected random graph whose nodes are the letters ``A``, ``B``, ``C`` ... (``n_nodes``
of them; 11 = ``A``..``K`` is the study's setting). Edges are written in canonical order, so the written
prompt *is* the graph and two different raw inputs never render alike:

- undirected edges as ``u v`` with the smaller letter first, sorted by (u, v), separated by ``,``;
- ``topological_sort`` writes each directed edge ``u v`` (u -> v), sorted by (u, v);
- ``mst`` writes each edge with its weight 1..9 after the pair: ``u v w``.

The input distribution is the Erdos-Renyi graph G(n_nodes, edge_prob) conditioned on being connected (drawn
by rejection), so its support is exactly the set of connected labelled graphs on ``n_nodes`` nodes and a graph
with m edges has probability proportional to edge_prob^m (1 - edge_prob)^(pairs - m); edge_prob = 0.5 is the
uniform distribution on connected graphs. The support is counted with the connected-graph recurrence
c(n) = g(n) - sum_{k=1}^{n-1} C(n-1, k-1) c(k) g(n-k), g(n) = (1 + w)^(n(n-1)/2), with w = 1 for plain
graphs and w = 9 for graphs whose edges carry a weight 1..9. When a space is small enough to enumerate
(build.ENUMERATION_LIMIT), ``build`` draws from it uniformly instead: every level-1 task but ``mst`` does.

Raw inputs are tuples of Python ints: a node is its index (A = 0), an edge ``(u, v)`` or ``(u, v, w)``.
All five tasks share one vocabulary: the letters of the largest level (or of ``n_nodes`` if larger), the
digits 1..9, ``:`` ``,`` ``=``, EOS and PAD.
"""

from __future__ import annotations

import math
import string
from functools import cache, lru_cache
from itertools import combinations, permutations, product
from operator import itemgetter
from typing import Any, ClassVar

import numpy as np

from emergence import registry
from emergence.tasks.base import EOS, PAD, Example, TaskInputError, Vocab

LETTERS: str = string.ascii_uppercase
LARGEST_LEVEL_NODES = 11
MAX_WEIGHT = 9  # MST weights are the single digits 1..9
MIN_ACCEPTANCE = 0.01  # the least P(G(n, p) connected) that rejection sampling accepts to work with
Pair = tuple[int, int]
Triple = tuple[int, int, int]
Graph = tuple[Pair, ...]

# ---------------------------------------------------------------------------------------------- shared


def _check(params: dict[str, Any]) -> tuple[int, float]:
    """(n_nodes, edge_prob) after validation; every graph task takes its behaviour from these two alone."""
    n = params["n_nodes"]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= len(LETTERS):
        raise TaskInputError("params.n_nodes", f"n_nodes = {n!r}; must be an integer in [2, {len(LETTERS)}] (nodes are letters)")
    p = params["edge_prob"]
    # Strictly inside (0, 1): only then is every connected graph possible, which is what input_space_size counts.
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 0.0 < float(p) < 1.0:
        raise TaskInputError("params.edge_prob", f"edge_prob = {p!r}; must be a number strictly between 0 and 1")
    return int(n), float(p)


@cache
def _pairs(n: int) -> tuple[Pair, ...]:
    """Every node pair (u < v) in canonical order; the same tuple objects are reused in every raw input."""
    return tuple(combinations(range(n), 2))


@cache
def _weighted_pairs(n: int) -> tuple[tuple[Triple, ...], ...]:
    """_weighted_pairs(n)[k][w] = (u, v, w) for pair k: shared objects keep an enumerated weighted space small."""
    return tuple(tuple((u, v, w) for w in range(MAX_WEIGHT + 1)) for u, v in _pairs(n))


@cache
def _names(family: str, n: int) -> tuple[str, ...]:
    return tuple(f"{family}/{LETTERS[x]}" for x in range(n))


@cache
def _connected_count(n: int, colours: int) -> int:
    """Connected labelled graphs on n nodes whose edges each carry one of `colours` labels (1 = plain graphs).

    g(m) = (1 + colours)^(m(m-1)/2) counts all graphs (each pair absent or one of the labels); the graphs whose
    node 0 lies in a component of size k number C(m-1, k-1) c(k) g(m-k), and k = m is the connected case.
    """
    c = [0, 1]
    for m in range(2, n + 1):
        total = (1 + colours) ** (m * (m - 1) // 2)
        c.append(total - sum(math.comb(m - 1, k - 1) * c[k] * (1 + colours) ** ((m - k) * (m - k - 1) // 2) for k in range(1, m)))
    return c[n]


@cache
def _connected_probability(n: int, p: float) -> float:
    """P(G(n, p) is connected), by the same recurrence with probabilities: sizes each rejection batch."""
    c = [0.0, 1.0]
    for m in range(2, n + 1):
        c.append(1.0 - sum(math.comb(m - 1, k - 1) * c[k] * (1.0 - p) ** (k * (m - k)) for k in range(1, m)))
    return c[n]


def _is_connected(n: int, edges: Graph) -> bool:
    adjacency = [0] * n
    for u, v in edges:
        adjacency[u] |= 1 << v
        adjacency[v] |= 1 << u
    reached, frontier = 1, 1
    while frontier:
        grown = reached
        for x in range(n):
            if frontier >> x & 1:
                grown |= adjacency[x]
        frontier, reached = grown & ~reached, grown
    return reached == (1 << n) - 1


@lru_cache(maxsize=4)
def _connected_graphs(n: int) -> tuple[Graph, ...]:
    """Every connected graph on n nodes, ordered by its edge set read as a bit mask over _pairs(n)."""
    pairs = _pairs(n)
    graphs = []
    for mask in range(1 << len(pairs)):
        edges = tuple(pair for k, pair in enumerate(pairs) if mask >> k & 1)
        if len(edges) >= n - 1 and _is_connected(n, edges):
            graphs.append(edges)
    return tuple(graphs)


def _random_masks(n: int, p: float, rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` rows of pair-membership booleans (columns in _pairs order): G(n, p) conditioned on connectivity."""
    pairs = np.array(_pairs(n), dtype=np.int64).reshape(-1, 2)
    accept = _connected_probability(n, p)
    if accept < MIN_ACCEPTANCE:  # rejection would run (nearly) forever
        raise TaskInputError(
            "params.edge_prob",
            f"edge_prob = {p}: G({n}, {p}) is connected with probability {accept:.2g}, too rarely to draw connected "
            f"graphs by rejection; use an edge_prob that makes it at least {MIN_ACCEPTANCE}",
        )
    kept: list[np.ndarray] = []
    have = 0
    while have < count:
        # A batch sized for the expected acceptance rate, capped so the n x n reachability stack stays small.
        draw = min(int((count - have) / accept * 1.1) + 16, max(1_000, 5_000_000 // (n * n)))
        masks = rng.random((draw, len(pairs))) < p
        reach = np.zeros((draw, n, n), dtype=np.float32)
        reach[:, pairs[:, 0], pairs[:, 1]] = masks
        reach[:, pairs[:, 1], pairs[:, 0]] = masks
        reach[:, np.arange(n), np.arange(n)] = 1.0
        for _ in range(max(1, math.ceil(math.log2(n)))):  # squaring: paths of length <= 2^k after k rounds
            reach = (reach @ reach > 0).astype(np.float32)
        ok = reach[:, 0, :].all(axis=1)
        kept.append(masks[ok])
        have += int(ok.sum())
    return np.concatenate(kept)[:count]


def _rows(masks: np.ndarray) -> tuple[list[int], list[int]]:
    """(column indices of the True entries, row ends): one numpy call for the whole batch, not one per row."""
    _, cols = np.nonzero(masks)
    return cols.tolist(), np.cumsum(masks.sum(axis=1)).tolist()


def _random_graphs(n: int, p: float, rng: np.random.Generator, count: int) -> list[Graph]:
    pairs = _pairs(n)
    cols, ends = _rows(_random_masks(n, p, rng, count))
    graphs, start = [], 0
    for end in ends:
        # nonzero() is row-major, so the columns of a row ascend: the edges come out in canonical order.
        graphs.append(tuple([pairs[k] for k in cols[start:end]]))
        start = end
    return graphs


def _adjacency(n: int, edges: Graph) -> list[list[int]]:
    """Neighbour lists in alphabetical order.

    No sort is needed: in canonical edge order the pairs (a, x), a < x, come by increasing a and before every
    (x, b), which come by increasing b.
    """
    adjacency: list[list[int]] = [[] for _ in range(n)]
    for u, v in edges:
        adjacency[u].append(v)
        adjacency[v].append(u)
    return adjacency


def _edge_tokens(edges: Graph) -> list[str]:
    tokens: list[str] = []
    for u, v in edges:
        tokens += (LETTERS[u], LETTERS[v], ",")
    return tokens[:-1]  # "," separates edges; none after the last


def _per_node(family: str, n: int, snapshots: list[list[int]]) -> dict[str, list[int | None]]:
    """One scalar feature per node from per-step state vectors, with nothing to read at EOS."""
    return dict(zip(_names(family, n), map(list, zip(*snapshots, [None] * n, strict=True)), strict=True))


@cache
def _runs(n: int) -> tuple[tuple[tuple[int | None, ...], ...], ...]:
    """_runs(n)[a][b - a + 1]: the n-step 0/1 labels that are 1 at steps a..b inclusive (none if b = a - 1), then None."""
    return tuple(
        tuple((*[0] * a, *[1] * (b - a + 1), *[0] * (n - 1 - b), None) for b in range(a - 1, n)) for a in range(n + 1)
    )


def _intervals(family: str, n: int, first: list[int], last: list[int]) -> dict[str, list[int | None]]:
    """One 0/1 feature per node over the n steps of an order: node x is 1 at steps first[x]..last[x] inclusive.

    Membership in a queue, a stack, a ready set or the visited set is always one such interval, so a label list
    is a copy of a precomputed one: several times faster than copying a state vector at every step.
    """
    runs = _runs(n)
    return {name: [*runs[a][b - a + 1]] for name, a, b in zip(_names(family, n), first, last, strict=True)}


def _hop_distances(adjacency: list[list[int]], source: int) -> list[int]:
    distance = [-1] * len(adjacency)
    distance[source] = 0
    frontier = [source]
    while frontier:
        following = []
        for x in frontier:
            for y in adjacency[x]:
                if distance[y] < 0:
                    distance[y] = distance[x] + 1
                    following.append(y)
        frontier = following
    return distance


class _GraphTask:
    """What the five tasks share: levels, parameters and the vocabulary."""

    levels: ClassVar[dict[int, dict[str, Any]]] = {
        1: {"n_nodes": 5, "edge_prob": 0.5},
        2: {"n_nodes": 8, "edge_prob": 0.35},
        3: {"n_nodes": LARGEST_LEVEL_NODES, "edge_prob": 0.3},
    }
    level_notes: ClassVar[dict[int, str]] = {
        1: (
            "5 nodes A-E: 3,640 (graph, start) inputs, drawn uniformly from the whole space (728 connected graphs, "
            "5.7 edges on average): the easiest"
        ),
        2: "8 nodes A-H, G(8, 0.35) given connected (about 11 edges): longer traversals, more to track",
        3: "11 nodes A-K, G(11, 0.3) given connected (about 17.5 edges): the quiet-features setting",
    }

    def default_params(self, level: int) -> dict[str, Any]:
        return dict(self.levels[level])

    def vocab(self, params: dict[str, Any]) -> Vocab:
        # One vocabulary for every level and all five tasks, so a mixture of levels shares its embedding.
        n, _ = _check(params)
        letters = LETTERS[: max(LARGEST_LEVEL_NODES, n)]
        return Vocab((*letters, *(str(w) for w in range(1, MAX_WEIGHT + 1)), ":", ",", "=", EOS, PAD))


# ------------------------------------------------------------------------------------------ traversals


class _Traversal(_GraphTask):
    """BFS and DFS: the input is (start node, connected graph), the answer an order of every node."""

    def input_space_size(self, params: dict[str, Any]) -> int:
        n, _ = _check(params)
        return n * _connected_count(n, 1)

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        # A uniform guess over the orders of all n nodes that begin with the start node (given in the prompt).
        n, _ = _check(params)
        return 1.0 / math.factorial(n - 1)

    def enumerate_inputs(self, params: dict[str, Any]) -> list[tuple[int, Graph]]:
        n, _ = _check(params)
        return [(start, graph) for graph in _connected_graphs(n) for start in range(n)]

    def random_inputs(self, params: dict[str, Any], rng: np.random.Generator, n: int) -> list[tuple[int, Graph]]:
        n_nodes, p = _check(params)
        graphs = _random_graphs(n_nodes, p, rng, n)
        return list(zip(rng.integers(0, n_nodes, size=n).tolist(), graphs, strict=True))


@registry.tasks.register("bfs")
class BreadthFirstSearch(_Traversal):
    name: ClassVar[str] = "bfs"
    description: ClassVar[str] = "s : u v , u v , ... = BFS visit order from s (every node), neighbours alphabetically"
    feature_names: ClassVar[tuple[str, ...]] = ("queue", "visited")
    feature_notes: ClassVar[dict[str, str]] = {
        "queue": (
            "queue/X = 1 if X is in the BFS queue just before the node of answer token j is dequeued (after the "
            "previous node was dequeued and its undiscovered neighbours enqueued; the node itself is in it), at "
            "the position predicting answer token j; none at EOS"
        ),
        "visited": "visited/X = 1 if X is among answer tokens 0..j-1 (already output), same positions; none at EOS",
    }

    def example(self, raw_input: tuple[int, Graph], params: dict[str, Any]) -> Example:
        n, _ = _check(params)
        start, edges = raw_input
        adjacency = _adjacency(n, edges)
        # A node enters the queue when its discoverer is dequeued (step k of the answer), so it is in the queue at
        # steps k + 1 .. its own position; it is visited from the step after its own position on.
        enqueued = [-1] * n
        enqueued[start] = 0
        queue = [start]
        for step, x in enumerate(queue):  # the list grows while it is read: it is the queue, head = step
            for y in adjacency[x]:
                if enqueued[y] < 0:
                    enqueued[y] = step + 1
                    queue.append(y)
        position = [0] * n
        for step, x in enumerate(queue):
            position[x] = step
        return Example(
            prompt=[LETTERS[start], ":", *_edge_tokens(edges), "="],
            answer=[*(LETTERS[x] for x in queue), EOS],
            features=_intervals("queue", n, enqueued, position)
            | _intervals("visited", n, [p + 1 for p in position], [n - 1] * n),
        )


@registry.tasks.register("dfs")
class DepthFirstSearch(_Traversal):
    name: ClassVar[str] = "dfs"
    description: ClassVar[str] = "s : u v , u v , ... = DFS preorder from s, smallest unvisited neighbour first"
    feature_names: ClassVar[tuple[str, ...]] = ("stack", "visited")
    feature_notes: ClassVar[dict[str, str]] = {
        "stack": (
            "stack/X = 1 if X is on the recursion stack when the node of answer token j is discovered: the DFS-tree "
            "path from the start to that node's parent, after backtracking out of finished nodes (so all 0 at "
            "j = 0, and the node itself is not on it); at the position predicting answer token j; none at EOS"
        ),
        "visited": "visited/X = 1 if X is among answer tokens 0..j-1 (already output), same positions; none at EOS",
    }

    def example(self, raw_input: tuple[int, Graph], params: dict[str, Any]) -> Example:
        n, _ = _check(params)
        start, edges = raw_input
        adjacency = _adjacency(n, edges)
        visited = [0] * n
        next_neighbour = [0] * n  # where each node's scan of its neighbour list resumes after a return
        # A node is on the stack from the step after its own (it is pushed as it is output) until it returns;
        # returned[x] = the number of nodes output when x returns, the first step at which it is off the stack.
        returned = [n] * n
        order, path = [start], [start]
        visited[start] = 1
        while path:
            x = path[-1]
            neighbours, i = adjacency[x], next_neighbour[x]
            while i < len(neighbours) and visited[neighbours[i]]:
                i += 1
            next_neighbour[x] = i
            if i == len(neighbours):  # finished: return to the caller
                path.pop()
                returned[x] = len(order)
                continue
            y = neighbours[i]
            order.append(y)
            path.append(y)
            visited[y] = 1
        position = [0] * n
        for step, x in enumerate(order):
            position[x] = step
        after = [p + 1 for p in position]
        return Example(
            prompt=[LETTERS[start], ":", *_edge_tokens(edges), "="],
            answer=[*(LETTERS[x] for x in order), EOS],
            features=_intervals("stack", n, after, [r - 1 for r in returned]) | _intervals("visited", n, after, [n - 1] * n),
        )


# --------------------------------------------------------------------------------------- shortest path


@registry.tasks.register("shortest_path")
class ShortestPath(_GraphTask):
    name: ClassVar[str] = "shortest_path"
    description: ClassVar[str] = (
        "s t : u v , u v , ... = the nodes of a shortest s-t path, s and t included; ties: the alphabetically "
        "smallest node sequence"
    )
    level_notes: ClassVar[dict[int, str]] = {
        1: "5 nodes A-E: 14,560 (graph, s, t) inputs drawn uniformly from the whole space; paths of 1-4 hops",
        2: "8 nodes A-H, G(8, 0.35) given connected (about 11 edges): paths up to 7 hops, mostly 1-3",
        3: "11 nodes A-K, G(11, 0.3) given connected (about 17.5 edges): the quiet-features setting",
    }
    feature_names: ClassVar[tuple[str, ...]] = ("dist", "to_dst", "remaining")
    feature_notes: ClassVar[dict[str, str]] = {
        "dist": "dist/X = hop distance from s to X, the same at every answer position but EOS (none there)",
        "to_dst": "to_dst/X = hop distance from X to t (what the path follows downhill), every answer position but EOS",
        "remaining": (
            "hop distance from the node of answer token j to t (so d(s, t) at j = 0 and 0 at t), at the position "
            "predicting answer token j; none at EOS"
        ),
    }

    def input_space_size(self, params: dict[str, Any]) -> int:
        n, _ = _check(params)
        return n * (n - 1) * _connected_count(n, 1)

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        # A uniform guess over every simple s-t path through the n letters: sum_k (n-2)!/(n-2-k)! of them,
        # k the number of intermediate nodes.
        n, _ = _check(params)
        return 1.0 / sum(math.perm(n - 2, k) for k in range(n - 1))

    def enumerate_inputs(self, params: dict[str, Any]) -> list[tuple[int, int, Graph]]:
        n, _ = _check(params)
        return [(s, t, graph) for graph in _connected_graphs(n) for s in range(n) for t in range(n) if s != t]

    def random_inputs(self, params: dict[str, Any], rng: np.random.Generator, n: int) -> list[tuple[int, int, Graph]]:
        n_nodes, p = _check(params)
        graphs = _random_graphs(n_nodes, p, rng, n)
        sources = rng.integers(0, n_nodes, size=n)
        targets = (sources + rng.integers(1, n_nodes, size=n)) % n_nodes  # uniform over the other n - 1 nodes
        return list(zip(sources.tolist(), targets.tolist(), graphs, strict=True))

    def example(self, raw_input: tuple[int, int, Graph], params: dict[str, Any]) -> Example:
        n, _ = _check(params)
        source, target, edges = raw_input
        adjacency = _adjacency(n, edges)
        from_source = _hop_distances(adjacency, source)
        to_target = _hop_distances(adjacency, target)
        # Every shortest path has the same length, so the smallest sequence takes the smallest possible next node
        # at each step: the first neighbour (lists are alphabetical) one hop closer to t.
        path = [source]
        x = source
        while x != target:
            x = next(y for y in adjacency[x] if to_target[y] == to_target[x] - 1)
            path.append(x)
        length = len(path)
        features: dict[str, list[int | None]] = {}
        for name, d in zip(_names("dist", n), from_source, strict=True):
            features[name] = [d] * length + [None]
        for name, d in zip(_names("to_dst", n), to_target, strict=True):
            features[name] = [d] * length + [None]
        features["remaining"] = [to_target[x] for x in path] + [None]
        return Example(
            prompt=[LETTERS[source], LETTERS[target], ":", *_edge_tokens(edges), "="],
            answer=[*(LETTERS[x] for x in path), EOS],
            features=features,
        )


# ------------------------------------------------------------------------------------ topological sort


@cache
def _dag_count(n: int) -> int:
    """Labelled DAGs on n nodes (Robinson): a(m) = sum_k (-1)^(k+1) C(m, k) 2^(k(m-k)) a(m-k), k the sources."""
    a = [1]
    for m in range(1, n + 1):
        a.append(sum((-1) ** (k + 1) * math.comb(m, k) * 2 ** (k * (m - k)) * a[m - k] for k in range(1, m + 1)))
    return a[n]


@cache
def _connected_dag_count(n: int) -> int:
    """Weakly connected labelled DAGs: a DAG is the disjoint union of its weak components, so the same
    recurrence as for connected graphs, with a(m) in place of g(m). 1, 2, 18, 446, 26430, 3596762 (OEIS A082402)."""
    c = [0, 1]
    for m in range(2, n + 1):
        c.append(_dag_count(m) - sum(math.comb(m - 1, k - 1) * c[k] * _dag_count(m - k) for k in range(1, m)))
    return c[n]


@registry.tasks.register("topological_sort")
class TopologicalSort(_GraphTask):
    name: ClassVar[str] = "topological_sort"
    description: ClassVar[str] = "u v , u v , ... = the alphabetically smallest topological order (u v is u -> v)"
    level_notes: ClassVar[dict[int, str]] = {
        1: "5 nodes A-E: the 26,430 weakly connected DAGs, drawn uniformly from the whole space: the easiest",
        2: "8 nodes A-H: G(8, 0.35) given connected (about 11 edges), oriented by a random node order",
        3: "11 nodes A-K: G(11, 0.3) given connected (about 17.5 edges), oriented by a random node order",
    }
    feature_names: ClassVar[tuple[str, ...]] = ("ready",)
    feature_notes: ClassVar[dict[str, str]] = {
        "ready": (
            "ready/X = 1 if X is not yet output and all its predecessors are (in-degree 0 in what remains), just "
            "before answer token j, at the position predicting it (the node of token j is the smallest ready one); "
            "none at EOS"
        ),
    }

    def input_space_size(self, params: dict[str, Any]) -> int:
        # Orienting a connected graph by a node order gives an acyclic orientation, and every acyclic orientation
        # comes from one (any of its linear extensions): the support is every weakly connected labelled DAG.
        n, _ = _check(params)
        return _connected_dag_count(n)

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        # A uniform guess over the orders of the n nodes.
        n, _ = _check(params)
        return 1.0 / math.factorial(n)

    def enumerate_inputs(self, params: dict[str, Any]) -> list[Graph]:
        # Distinct orientations by every node order: n! per graph, fine where the space is enumerable (n <= 5).
        n, _ = _check(params)
        everything: list[Graph] = []
        for graph in _connected_graphs(n):
            oriented = set()
            for order in permutations(range(n)):
                rank = [0] * n
                for position, x in enumerate(order):
                    rank[x] = position
                oriented.add(tuple(sorted((u, v) if rank[u] < rank[v] else (v, u) for u, v in graph)))
            everything += sorted(oriented)
        return everything

    def random_inputs(self, params: dict[str, Any], rng: np.random.Generator, n: int) -> list[Graph]:
        n_nodes, p = _check(params)
        pairs = _pairs(n_nodes)
        cols, ends = _rows(_random_masks(n_nodes, p, rng, n))
        keys = rng.random((n, n_nodes))  # a uniformly random node order: u before v if key u < key v
        ends_of = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        reversed_ = (keys[:, ends_of[:, 0]] > keys[:, ends_of[:, 1]]).tolist()
        flipped = [(v, u) for u, v in pairs]
        graphs, start = [], 0
        for row, end in enumerate(ends):
            flips = reversed_[row]
            graphs.append(tuple(sorted([flipped[k] if flips[k] else pairs[k] for k in cols[start:end]])))
            start = end
        return graphs

    def example(self, raw_input: Graph, params: dict[str, Any]) -> Example:
        n, _ = _check(params)
        successors: list[list[int]] = [[] for _ in range(n)]
        in_degree = [0] * n
        for u, v in raw_input:
            successors[u].append(v)
            in_degree[v] += 1
        ready = [int(d == 0) for d in in_degree]
        # The step from which a node is ready: the number of nodes output when its last predecessor was.
        became_ready = [0] * n
        order: list[int] = []
        for step in range(n):
            x = ready.index(1)  # Kahn's algorithm taking the smallest ready node
            ready[x] = 0
            order.append(x)
            for y in successors[x]:
                in_degree[y] -= 1
                if in_degree[y] == 0:
                    ready[y] = 1
                    became_ready[y] = step + 1
        position = [0] * n
        for step, x in enumerate(order):
            position[x] = step
        return Example(
            prompt=[*_edge_tokens(raw_input), "="],
            answer=[*(LETTERS[x] for x in order), EOS],
            features=_intervals("ready", n, became_ready, position),
        )


# ------------------------------------------------------------------------------ minimum spanning tree


@registry.tasks.register("mst")
class MinimumSpanningTree(_GraphTask):
    name: ClassVar[str] = "mst"
    description: ClassVar[str] = (
        "u v w , u v w , ... = the MST's edges as letter pairs in Kruskal order, weights w in 1..9; edges sorted "
        "(and ties broken) by (w, u, v)"
    )
    level_notes: ClassVar[dict[int, str]] = {
        1: "5 nodes A-E, weights 1-9, uniform over the 1e10 weighted connected graphs (5.7 edges): 4 tree edges",
        2: "8 nodes A-H, G(8, 0.35) given connected (about 11 edges), weights 1-9: 7 tree edges",
        3: "11 nodes A-K, G(11, 0.3) given connected (about 17.5 edges), weights 1-9: the quiet-features setting",
    }
    feature_names: ClassVar[tuple[str, ...]] = ("component", "weight")
    feature_notes: ClassVar[dict[str, str]] = {
        "component": (
            "component/X = index (A = 0) of the alphabetically smallest node in X's union-find component just "
            "before the tree edge being output is added, at the positions predicting both letters of that edge; "
            "none at EOS"
        ),
        "weight": "the weight of the tree edge being output, at the positions predicting both its letters; none at EOS",
    }

    def input_space_size(self, params: dict[str, Any]) -> int:
        n, _ = _check(params)
        return _connected_count(n, MAX_WEIGHT)

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        # A uniform guess over the n^(n-2) spanning trees of the complete graph (Cayley); the order of the edges
        # follows from the weights in the prompt.
        n, _ = _check(params)
        return 1.0 / n ** (n - 2)

    def enumerate_inputs(self, params: dict[str, Any]) -> list[tuple[Triple, ...]]:
        n, _ = _check(params)
        index = {pair: k for k, pair in enumerate(_pairs(n))}
        table = _weighted_pairs(n)
        everything: list[tuple[Triple, ...]] = []
        for graph in _connected_graphs(n):
            rows = [table[index[pair]][1:] for pair in graph]
            everything += product(*rows)
        return everything

    def random_inputs(self, params: dict[str, Any], rng: np.random.Generator, n: int) -> list[tuple[Triple, ...]]:
        n_nodes, p = _check(params)
        table = _weighted_pairs(n_nodes)
        masks = _random_masks(n_nodes, p, rng, n)
        cols, ends = _rows(masks)
        weights = rng.integers(1, MAX_WEIGHT + 1, size=masks.shape)[masks].tolist()  # row-major, like cols
        graphs, start = [], 0
        for end in ends:
            graphs.append(tuple([table[k][w] for k, w in zip(cols[start:end], weights[start:end], strict=True)]))
            start = end
        return graphs

    def example(self, raw_input: tuple[Triple, ...], params: dict[str, Any]) -> Example:
        n, _ = _check(params)
        # Canonical input order is (u, v); a stable sort on w alone gives the (w, u, v) order.
        # The smallest node of each node's component (the root of a union-find whose root is always the minimum):
        # a union relabels the larger label.
        component = list(range(n))
        answer: list[str] = []
        component_states: list[list[int]] = []
        weights: list[int | None] = []
        for u, v, w in sorted(raw_input, key=itemgetter(2)):
            a, b = component[u], component[v]
            if a == b:
                continue
            state = component[:]
            component_states += (state, state)
            weights += (w, w)
            answer += (LETTERS[u], LETTERS[v])
            low, high = min(a, b), max(a, b)
            component = [low if c == high else c for c in component]
            if len(answer) == 2 * (n - 1):
                break
        edge_tokens: list[str] = []
        for u, v, w in raw_input:
            edge_tokens += (LETTERS[u], LETTERS[v], str(w), ",")
        return Example(
            prompt=[*edge_tokens[:-1], "="],
            answer=[*answer, EOS],
            features=_per_node("component", n, component_states) | {"weight": [*weights, None]},
        )
