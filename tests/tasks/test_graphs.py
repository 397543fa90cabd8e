"""Graph tasks checked against networkx: answers, every feature label, the input space and its count.

Nothing here comes from the generator: each test decodes the token tensors, parses the prompt itself and
recomputes answers and labels with networkx (or brute force), using characterisations of the labels that
differ from the generator's bookkeeping (queue = not yet output and adjacent to something output, stack =
DFS-tree ancestors, ready = all predecessors output, components of the partial forest).
"""

from __future__ import annotations

import math
from itertools import combinations, product

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emergence import registry
from emergence.tasks import EOS, NO_LABEL, PAD, TaskInputError, build_task

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
TASKS = ("bfs", "dfs", "shortest_path", "topological_sort", "mst")
NODES = {1: 5, 2: 8, 3: 11}
FAMILIES = {
    "bfs": ("queue", "visited"),
    "dfs": ("stack", "visited"),
    "shortest_path": ("dist", "to_dst"),
    "topological_sort": ("ready",),
    "mst": ("component",),
}
SCALARS = {"bfs": (), "dfs": (), "shortest_path": ("remaining",), "topological_sort": (), "mst": ("weight",)}
# OEIS A001187 (connected labelled graphs) and A082402 (weakly connected labelled DAGs), n = 1, 2, ...
CONNECTED_GRAPHS = (1, 1, 4, 38, 728, 26704, 1866256, 251548592)
CONNECTED_DAGS = (1, 2, 18, 446, 26430, 3596762, 1111506858)


# ----------------------------------------------------------------------------------------------- parsing


def examples(data):
    """(prompt, answer, labels) for every train and test row, decoded from the tensors."""
    for split in (data.train, data.test):
        for i in range(len(split)):
            text = data.vocab.decode(split.tokens[i])
            start, length = int(split.prompt_len[i]), int(split.answer_len[i])
            assert all(t == PAD for t in text[start + length :])
            assert PAD not in text[: start + length]
            labels = {name: split.features[name][i].tolist() for name in split.features}
            yield text[:start], text[start : start + length], labels


def edge_groups(tokens: list[str]) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    for token in tokens:
        if token == ",":
            groups.append([])
        else:
            groups[-1].append(token)
    return groups


def undirected(tokens: list[str], n: int) -> nx.Graph:
    """The graph of `u v , u v ...`, after checking the canonical order the task promises."""
    pairs = [tuple(group) for group in edge_groups(tokens)]
    assert all(len(p) == 2 and p[0] < p[1] and p[1] in LETTERS[:n] for p in pairs)
    assert pairs == sorted(set(pairs))
    graph = nx.Graph()
    graph.add_nodes_from(LETTERS[:n])
    graph.add_edges_from(pairs)
    assert nx.is_connected(graph)
    return graph


def parse(name: str, prompt: list[str], n: int):
    """(graph, source, target) from a prompt; source / target are None where the task has none."""
    assert prompt[-1] == "="
    if name in ("bfs", "dfs"):
        assert prompt[1] == ":"
        return undirected(prompt[2:-1], n), prompt[0], None
    if name == "shortest_path":
        assert prompt[2] == ":" and prompt[0] != prompt[1]
        return undirected(prompt[3:-1], n), prompt[0], prompt[1]
    if name == "topological_sort":
        arcs = [tuple(group) for group in edge_groups(prompt[:-1])]
        assert all(len(a) == 2 and a[0] != a[1] and set(a) <= set(LETTERS[:n]) for a in arcs)
        assert arcs == sorted(arcs)
        assert len({frozenset(a) for a in arcs}) == len(arcs)  # no pair twice, in either direction
        graph = nx.DiGraph()
        graph.add_nodes_from(LETTERS[:n])
        graph.add_edges_from(arcs)
        assert nx.is_directed_acyclic_graph(graph) and nx.is_weakly_connected(graph)
        return graph, None, None
    triples = [tuple(group) for group in edge_groups(prompt[:-1])]
    assert all(len(t) == 3 and t[0] < t[1] and t[1] in LETTERS[:n] and t[2] in "123456789" for t in triples)
    assert [t[:2] for t in triples] == sorted({t[:2] for t in triples})
    graph = nx.Graph()
    graph.add_nodes_from(LETTERS[:n])
    graph.add_weighted_edges_from((u, v, int(w)) for u, v, w in triples)
    assert nx.is_connected(graph)
    return graph, None, None


def raw_key(name: str, prompt: list[str], n: int):
    """The input a prompt shows, as the test's own hashable form."""
    graph, source, target = parse(name, prompt, n)
    if name == "mst":
        return frozenset((*sorted((u, v)), d["weight"]) for u, v, d in graph.edges(data=True))
    if name == "topological_sort":
        return frozenset(graph.edges)
    edges = frozenset(frozenset(e) for e in graph.edges)
    return (source, edges) if target is None else (source, target, edges)


def assert_labels(labels: dict[str, list[int]], expected: dict[str, list[int | None]], answer_len: int) -> None:
    assert set(labels) == set(expected)
    for name, values in expected.items():
        assert len(values) == answer_len, name
        row = labels[name]
        assert row[:answer_len] == [NO_LABEL if v is None else v for v in values], name
        assert all(v == NO_LABEL for v in row[answer_len:]), name


# ------------------------------------------------------------------------------------------------ oracles


def check_bfs(prompt, answer, labels, n):
    graph, source, _ = parse("bfs", prompt, n)
    order = [source] + [v for _, v in nx.bfs_edges(graph, source, sort_neighbors=sorted)]
    assert answer == [*order, EOS]
    hops = nx.single_source_shortest_path_length(graph, source)
    assert [hops[x] for x in order] == sorted(hops[x] for x in order)  # a BFS order is by distance
    expected = {}
    for x in LETTERS[:n]:
        k = order.index(x)
        # Before step j the queue holds exactly the nodes not yet output that are the start or adjacent to an
        # output node (every output node has enqueued all its neighbours).
        expected[f"queue/{x}"] = [
            int(k >= j and (x == source or any(y in order[:j] for y in graph[x]))) for j in range(n)
        ] + [None]
        expected[f"visited/{x}"] = [int(x in order[:j]) for j in range(n)] + [None]
    assert_labels(labels, expected, len(answer))


def check_dfs(prompt, answer, labels, n):
    graph, source, _ = parse("dfs", prompt, n)
    order = list(nx.dfs_preorder_nodes(graph, source, sort_neighbors=sorted))
    assert answer == [*order, EOS]
    tree = nx.dfs_tree(graph, source, sort_neighbors=sorted)
    expected = {}
    for x in LETTERS[:n]:
        expected[f"stack/{x}"] = [int(x in nx.ancestors(tree, order[j])) for j in range(n)] + [None]
        expected[f"visited/{x}"] = [int(x in order[:j]) for j in range(n)] + [None]
    assert_labels(labels, expected, len(answer))


def check_shortest_path(prompt, answer, labels, n):
    graph, source, target = parse("shortest_path", prompt, n)
    path = min(nx.all_shortest_paths(graph, source, target))
    assert answer == [*path, EOS]
    from_source = nx.single_source_shortest_path_length(graph, source)
    to_target = nx.single_source_shortest_path_length(graph, target)
    length = len(path)
    expected: dict[str, list[int | None]] = {"remaining": [nx.shortest_path_length(graph, x, target) for x in path] + [None]}
    for x in LETTERS[:n]:
        expected[f"dist/{x}"] = [from_source[x]] * length + [None]
        expected[f"to_dst/{x}"] = [to_target[x]] * length + [None]
    assert_labels(labels, expected, len(answer))


def check_topological_sort(prompt, answer, labels, n):
    graph, _, _ = parse("topological_sort", prompt, n)
    order = list(nx.lexicographical_topological_sort(graph))
    assert answer == [*order, EOS]
    assert all(order.index(u) < order.index(v) for u, v in graph.edges)
    expected = {}
    for x in LETTERS[:n]:
        expected[f"ready/{x}"] = [
            int(x not in order[:j] and set(graph.predecessors(x)) <= set(order[:j])) for j in range(n)
        ] + [None]
    assert_labels(labels, expected, len(answer))


def check_mst(prompt, answer, labels, n, brute_force=False):
    graph, _, _ = parse("mst", prompt, n)
    # Distinct keys (w, u, v) make the minimum spanning tree unique; Kruskal order is ascending key.
    for u, v, data in graph.edges(data=True):
        a, b = sorted((u, v))
        data["key"] = data["weight"] * 10_000 + LETTERS.index(a) * 100 + LETTERS.index(b)
    tree = sorted(
        (tuple(sorted((u, v))) for u, v, _ in nx.minimum_spanning_edges(graph, algorithm="kruskal", weight="key")),
        key=lambda e: graph.edges[e]["key"],
    )
    assert answer == [*(x for edge in tree for x in edge), EOS]
    chosen = [tuple(answer[i : i + 2]) for i in range(0, len(answer) - 1, 2)]
    total = sum(graph.edges[e]["weight"] for e in chosen)
    assert total == nx.minimum_spanning_tree(graph).size(weight="weight")
    if brute_force:
        # Over every spanning tree: the least sorted list of (w, u, v) is the tie-broken MST, its sum the least.
        best = min(
            sorted((graph.edges[e]["weight"], *e) for e in subset)
            for subset in combinations(sorted(tuple(sorted(e)) for e in graph.edges), n - 1)
            if nx.is_tree(nx.Graph(list(subset)))
            and len({x for e in subset for x in e}) == n
        )
        assert [e[1:] for e in best] == chosen
    expected: dict[str, list[int | None]] = {"weight": []}
    for x in LETTERS[:n]:
        expected[f"component/{x}"] = []
    for k, edge in enumerate(chosen):
        forest = nx.Graph()
        forest.add_nodes_from(LETTERS[:n])
        forest.add_edges_from(chosen[:k])
        for part in nx.connected_components(forest):
            for x in part:
                expected[f"component/{x}"] += [LETTERS.index(min(part))] * 2
        expected["weight"] += [graph.edges[edge]["weight"]] * 2
    for values in expected.values():
        values.append(None)
    assert_labels(labels, expected, len(answer))


CHECKS = {
    "bfs": check_bfs,
    "dfs": check_dfs,
    "shortest_path": check_shortest_path,
    "topological_sort": check_topological_sort,
    "mst": check_mst,
}


# ------------------------------------------------------------------------------------------ answers, labels


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("level", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_answers_and_labels_match_networkx(name, level, seed):
    data = build_task(name, level, {}, 120, 60, 10, seed)
    n = NODES[level]
    assert data.params["n_nodes"] == n
    count = 0
    for prompt, answer, labels in examples(data):
        if name == "mst":
            check_mst(prompt, answer, labels, n, brute_force=level == 1)
        else:
            CHECKS[name](prompt, answer, labels, n)
        count += 1
    assert count == 180
    expected_names = {f"{family}/{x}" for family in FAMILIES[name] for x in LETTERS[:n]} | set(SCALARS[name])
    assert set(data.train.features) == expected_names


@pytest.mark.parametrize("name", TASKS)
def test_explicit_small_and_large_graphs(name):
    # Explicit params reach sizes no level uses: 3 nodes (enumerated) and 14 (sampled, letters beyond K).
    for n, p in ((3, 0.5), (14, 0.25)):
        data = build_task(name, 1, {"n_nodes": n, "edge_prob": p}, 8, 4, 2, 4)
        assert ("N" in data.vocab.tokens) == (n == 14)
        for prompt, answer, labels in examples(data):
            CHECKS[name](prompt, answer, labels, n)


def test_a_mixture_of_levels_labels_only_the_nodes_each_graph_has():
    data = build_task("bfs", [1, 3], {}, 40, 20, 10, 0)
    for split in (data.train, data.test):
        for i in range(len(split)):
            level = int(split.level[i])
            for x in "FGHIJK":
                row = split.features[f"queue/{x}"][i]
                assert (row == NO_LABEL).all() == (level == 1)


# ---------------------------------------------------------------------------------------------- the space


def connected_graphs(n: int) -> list[frozenset]:
    pairs = list(combinations(LETTERS[:n], 2))
    found = []
    for keep in product((False, True), repeat=len(pairs)):
        graph = nx.Graph()
        graph.add_nodes_from(LETTERS[:n])
        graph.add_edges_from(p for p, k in zip(pairs, keep, strict=True) if k)
        if nx.is_connected(graph):
            found.append(frozenset(frozenset(p) for p, k in zip(pairs, keep, strict=True) if k))
    return found


def brute_force_space(name: str, n: int) -> set:
    """Every input the task may draw on n nodes, found by trying every graph on n letters."""
    nodes = LETTERS[:n]
    if name in ("bfs", "dfs"):
        return {(s, g) for g in connected_graphs(n) for s in nodes}
    if name == "shortest_path":
        return {(s, t, g) for g in connected_graphs(n) for s in nodes for t in nodes if s != t}
    pairs = list(combinations(nodes, 2))
    found = set()
    if name == "topological_sort":
        for choice in product((None, 0, 1), repeat=len(pairs)):
            arcs = [(u, v) if c == 0 else (v, u) for (u, v), c in zip(pairs, choice, strict=True) if c is not None]
            graph = nx.DiGraph(arcs)
            graph.add_nodes_from(nodes)
            if nx.is_directed_acyclic_graph(graph) and nx.is_weakly_connected(graph):
                found.add(frozenset(arcs))
        return found
    for weights in product(range(10), repeat=len(pairs)):  # 0: no edge
        triples = [(u, v, w) for (u, v), w in zip(pairs, weights, strict=True) if w]
        graph = nx.Graph([t[:2] for t in triples])
        graph.add_nodes_from(nodes)
        if nx.is_connected(graph):
            found.add(frozenset(triples))
    return found


@pytest.mark.parametrize("name", TASKS)
def test_three_nodes_draw_the_whole_space(name):
    space = brute_force_space(name, 3)
    assert len(space) == {"bfs": 12, "dfs": 12, "shortest_path": 24, "topological_sort": 18, "mst": 972}[name]
    n_test = len(space) // 4
    data = build_task(name, 1, {"n_nodes": 3}, len(space) - n_test, n_test, 1, 0)
    assert data.input_space_size == len(space)
    drawn = [raw_key(name, prompt, 3) for prompt, _, _ in examples(data)]
    assert len(drawn) == len(set(drawn)) == len(space)
    assert set(drawn) == space


@pytest.mark.parametrize(
    ("name", "n"),
    # mst on 4 nodes has a million inputs: its count is checked in test_space_sizes_match_independent_counts.
    [(name, n) for name in TASKS for n in (2, 3, 4, 5) if name != "mst" or n <= 3],
)
def test_enumeration_is_the_counted_space(name, n):
    task = registry.tasks.get(name)()
    params = {"n_nodes": n, "edge_prob": 0.5}
    size = task.input_space_size(params)
    everything = task.enumerate_inputs(params)
    assert len(everything) == len(set(everything)) == size
    assert everything == task.enumerate_inputs(params)  # a fixed order


def test_space_sizes_match_independent_counts():
    def size(name, n):
        return registry.tasks.get(name)().input_space_size({"n_nodes": n, "edge_prob": 0.3})

    for n in range(2, 9):
        c = CONNECTED_GRAPHS[n - 1]
        assert (size("bfs", n), size("dfs", n), size("shortest_path", n)) == (n * c, n * c, n * (n - 1) * c)
    for n in range(2, 8):
        assert size("topological_sort", n) == CONNECTED_DAGS[n - 1]
    assert size("topological_sort", 4) == len(brute_force_space("topological_sort", 4))
    for n in range(2, 6):
        graphs = connected_graphs(n)
        assert len(graphs) == CONNECTED_GRAPHS[n - 1]
        # A weighted connected graph is a connected graph with one of 9 weights on each edge.
        assert size("mst", n) == sum(9 ** len(g) for g in graphs)


def test_train_and_test_never_overlap_and_small_spaces_are_used_whole():
    for name in TASKS:
        data = build_task(name, 2, {}, 500, 200, 50, 5)
        train = {tuple(r.tolist()) for r in data.train.tokens}
        test = [tuple(r.tolist()) for r in data.test.tokens]
        assert len(train) == 500 and len(set(test)) == 200 and not train & set(test)
        assert [tuple(r.tolist()) for r in data.diagnostic.tokens] == test[:50]
    data = build_task("bfs", 1, {}, 3000, 640, 10, 0)  # level 1 has 5 * 728 inputs
    train = {tuple(r.tolist()) for r in data.train.tokens}
    test = {tuple(r.tolist()) for r in data.test.tokens}
    assert len(train | test) == 3640 and not train & test


def conditioned_mean_edges(n: int, p: float, samples: int = 4000) -> float:
    """E[edges | connected] of G(n, p), estimated with networkx's own G(n, p) sampler."""
    sizes = []
    seed = 0
    while len(sizes) < samples:
        graph = nx.gnp_random_graph(n, p, seed=seed)
        seed += 1
        if nx.is_connected(graph):
            sizes.append(graph.number_of_edges())
    return sum(sizes) / len(sizes)


@pytest.mark.parametrize(("level", "n", "p"), [(2, 8, 0.35), (3, 11, 0.3)])
def test_sampled_levels_draw_connected_gnp_graphs(level, n, p):
    """Levels 2 and 3 are sampled: G(n, p) given connected, uniform start / endpoints, fair orientations."""
    edges, starts, endpoints = [], set(), set()
    for name in ("bfs", "shortest_path"):
        data = build_task(name, level, {}, 500, 100, 10, 9)
        for prompt, _, _ in examples(data):
            graph, source, target = parse(name, prompt, n)
            edges.append(graph.number_of_edges())
            if target is None:
                starts.add(source)
            else:
                endpoints.add((source, target))
    assert starts == set(LETTERS[:n])
    # 600 draws of n(n-1) ordered pairs: all, or all but a few, turn up.
    assert len(endpoints) >= min(n * (n - 1) - 10, 0.9 * n * (n - 1))
    # The mean of 1,200 edge counts has a standard error near 0.1; the tolerance is several of those.
    assert abs(sum(edges) / len(edges) - conditioned_mean_edges(n, p)) < 0.5
    forward = total = 0
    for prompt, _, _ in examples(build_task("topological_sort", level, {}, 300, 100, 10, 9)):
        graph, _, _ = parse("topological_sort", prompt, n)
        forward += sum(u < v for u, v in graph.edges)
        total += graph.number_of_edges()
    assert 0.45 < forward / total < 0.55  # a uniformly random node order orients each edge either way alike
    weights = []
    for prompt, _, _ in examples(build_task("mst", level, {}, 300, 100, 10, 9)):
        graph, _, _ = parse("mst", prompt, n)
        weights += [w for _, _, w in graph.edges(data="weight")]
    assert set(weights) == set(range(1, 10))
    assert abs(sum(weights) / len(weights) - 5) < 0.3  # uniform on 1..9


# ---------------------------------------------------------------------------------------------- refusals


def test_refuses_more_examples_than_the_input_space():
    with pytest.raises(TaskInputError, match="has only 12 distinct inputs") as error:
        build_task("bfs", 1, {"n_nodes": 3}, 12, 1, 1, 0)
    assert error.value.field == "train_size"
    with pytest.raises(TaskInputError, match="has only 18 distinct inputs"):
        build_task("topological_sort", 1, {"n_nodes": 3}, 15, 4, 1, 0)


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"n_nodes": 1}, "params.n_nodes"),
        ({"n_nodes": 27}, "params.n_nodes"),
        ({"n_nodes": "5"}, "params.n_nodes"),
        ({"n_nodes": True}, "params.n_nodes"),
        ({"edge_prob": 0}, "params.edge_prob"),
        ({"edge_prob": 1.0}, "params.edge_prob"),
        ({"edge_prob": -0.2}, "params.edge_prob"),
        ({"edge_prob": "0.3"}, "params.edge_prob"),
        ({"edge_prob": 0.05}, "params.edge_prob"),  # 11 nodes would almost never be connected
    ],
)
def test_bad_params_name_their_field(name, params, field):
    task = registry.tasks.get(name)()
    if params != {"edge_prob": 0.05}:  # refused as soon as read, before any drawing (which might never end)
        with pytest.raises(TaskInputError) as error:
            task.input_space_size({**task.default_params(3), **params})
        assert error.value.field == field
    with pytest.raises(TaskInputError) as error:
        build_task(name, 3, params, 10, 5, 1, 0)
    assert error.value.field == field


def test_unknown_param_is_refused():
    with pytest.raises(TaskInputError, match="unknown parameter"):
        build_task("mst", 1, {"max_weight": 5}, 10, 5, 1, 0)


# ------------------------------------------------------------------------------- vocabulary, chance, seeds


def test_one_vocabulary_for_every_task_and_level():
    vocabularies = {build_task(name, level, {}, 4, 2, 1, 0).vocab.tokens for name in TASKS for level in (1, 2, 3)}
    assert len(vocabularies) == 1
    (tokens,) = vocabularies
    assert {EOS, PAD, ":", ",", "=", *LETTERS[:11], *"123456789"} == set(tokens)


def test_chance_is_a_uniform_guess_over_answers_of_that_shape():
    def chance(name, level=1):
        return build_task(name, level, {}, 4, 2, 1, 0).chance_exact_match

    assert chance("bfs") == pytest.approx(1 / math.factorial(4))  # orders of the other 4 nodes
    assert chance("dfs", 3) == pytest.approx(1 / math.factorial(10))
    assert chance("topological_sort") == pytest.approx(1 / math.factorial(5))
    assert chance("mst") == pytest.approx(1 / 5**3)  # spanning trees of K5
    assert chance("mst") == pytest.approx(1 / sum(1 for t in combinations(combinations(range(5), 2), 4) if nx.is_tree(nx.Graph(list(t)))))
    simple_paths = sum(1 for _ in nx.all_simple_paths(nx.complete_graph(5), 0, 1))
    assert chance("shortest_path") == pytest.approx(1 / simple_paths)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), name=st.sampled_from(TASKS), n=st.integers(3, 9))
def test_same_seed_same_data(seed, name, n):
    first = build_task(name, 1, {"n_nodes": n}, 6, 3, 1, seed)
    second = build_task(name, 1, {"n_nodes": n}, 6, 3, 1, seed)
    assert first.train.tokens.equal(second.train.tokens) and first.test.tokens.equal(second.test.tokens)
    assert first.train.features.keys() == second.train.features.keys()
    assert all((first.train.features[k] == second.train.features[k]).all() for k in first.train.features)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), name=st.sampled_from(TASKS), level=st.sampled_from([1, 2, 3]))
def test_render_tokenize_decode_round_trip(seed, name, level):
    data = build_task(name, level, {}, 4, 2, 1, seed)
    n = NODES[level]
    for prompt, answer, labels in examples(data):
        CHECKS[name](prompt, answer, labels, n)
    for split in (data.train, data.test):
        for row in split.tokens:
            assert data.vocab.encode(data.vocab.decode(row)) == row.tolist()
