"""No spec string ever becomes code, and names that collide once an engine sanitises them
stay distinct (issue 18, part A).

One small network carries both cases: every string field of the spec (description, source,
layer names, top and bottom names) holds payloads that would run Python if pasted into
generated code (they touch a marker file), and its layer and blob names collide after
each engine's sanitising ("fc.1" / "fc_1" / "fc-1" / "fc 1"; "ﬁ", which Python's NFKC
reads as "fi"; Keras's own op names; nn.Module attributes; MXNet's NAME_output; ONNX's
LAYER.weight; Caffe's BatchNorm scale layer and blob). Every engine that writes code or
names builds it in its own child process and must compute what the spec means (zoo
verify), and the marker file must never appear.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import re
import tokenize
import zipfile
from pathlib import Path

import pytest
from google.protobuf import text_format

import zoo
from zoo import spec as S
from zoo import spec_pb2
from zoo import weights as W
from zoo.converters import torch as T
from zoo.converters.registry import UniqueNames

FORWARD_ENGINES = ["torch", "tensorflow", "mxnet", "caffe", "caffe-opencv", "onnx"]


def payloads(marker: Path) -> list[str]:
    """Strings that run `touch marker` wherever they land in Python code unescaped."""
    run = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    return [
        f'x"""\n{run}\n"""',                  # out of a docstring
        f"x'''\n{run}\n'''",
        f"x'\n{run}\n#",                      # out of a '...' literal
        f'x"]\n{run}\n#',                     # out of a dict key
        f"x) or {run} or (x",                 # an expression where a name was expected
        "x\\",                                # a backslash escaping the closing quote
        f"x\\'\n{run}\n#",
    ]


def layer(net, name, type_, bottoms=(), top=None, **param):
    lp = net.layer.add(name=name, type=type_)
    lp.bottom.extend(bottoms)
    if top is not None:
        lp.top.append(top)
    for field, values in param.items():
        msg = getattr(lp, field)
        for k, v in values.items():
            if isinstance(v, list):
                getattr(msg, k).extend(v)
            else:
                setattr(msg, k, v)
    return lp


def hostile_spec(marker: Path) -> spec_pb2.NetSpec:
    """(N, 4) -> many InnerProducts whose names collide when sanitised -> one sum, plus a
    Euclidean loss; every free string field holds an injection payload."""
    p = payloads(marker)
    net = spec_pb2.NetSpec(name="hostile.net-1", description=p[0] + p[2], source=p[1] + p[5])
    net.train.lr = 0.01
    ip = {"inner_product_param": {"num_output": 4}}
    layer(net, p[0], "Input", top=p[1], input_param={"shape": [2, 4]})              # data
    layer(net, "label", "Input", top="b", input_param={"shape": [2, 4]})            # torch's local
    # collisions: all sanitise to fc_1 (torch, MXNet) or fc_1 / fc.1 / fc-1 (Keras)
    for name in ["fc.1", "fc_1", "fc-1", "fc 1", "ﬁ", "fi", "1fc", "x1fc"]:
        layer(net, name, "InnerProduct", [p[1]], **ip)
    layer(net, "multiply", "Eltwise", ["fc.1", "fc_1"], top="multiply",           # Keras op name
          eltwise_param={"operation": spec_pb2.EltwiseParam.PROD})
    layer(net, "forward", "InnerProduct", ["multiply"], top="training", **ip)      # nn.Module attrs
    layer(net, "float", "ReLU", ["fc-1"], top="float")                            # a builtin
    layer(net, p[2], "TanH", ["fc 1"], top="a")                                   # MXNet: a_output
    layer(net, p[3], "Sigmoid", ["ﬁ"], top="a_output")
    layer(net, p[4], "ReLU", ["fi"], top="fc_1.weight")                           # ONNX initializer
    layer(net, "bn", "BatchNorm", ["1fc"], top="bn_out")                          # Caffe: bn__scale
    layer(net, "bn__scale", "Sigmoid", ["x1fc"], top="bn_out__bn")                # and bn_out__bn
    layer(net, p[5], "Eltwise", ["training", "float", "a", "a_output", "fc_1.weight", "bn_out",
                                 "bn_out__bn"], top=p[6],
          eltwise_param={"operation": spec_pb2.EltwiseParam.SUM,
                         "coeff": [1.0, 0.5, -1.0, 2.0, 1.0, 0.25, 1.0]})
    layer(net, p[6], "EuclideanLoss", [p[6], "b"], top="loss")
    return net


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    marker = d / "INJECTED"
    path = d / "hostile.prototxt"
    path.write_text(S.to_prototxt(hostile_spec(marker)))
    return path, marker


def payload_strings(net) -> set[str]:
    """Every string field of `net` that holds quotes, backslashes, newlines or parentheses."""
    out = {net.name, net.description, net.proto.source}
    for l in net.layers:
        out |= {l.name, *l.tops, *l.bottoms}
    return {s for s in out if re.search(r"[\"'\\\n()]", s)}


def test_spec_validates(hostile):
    path, _ = hostile
    assert [err for _, err in zoo.validate([path])] == [None]


def test_torch_model_py_holds_spec_strings_only_as_literals(hostile, tmp_path):
    path, marker = hostile
    net = zoo.load(path)
    source, _ = T.generate(net, W.for_net(net, 0))
    tree = ast.parse(source)
    constants = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
    # the description, the source and each blob key are there, as string constants
    assert {net.description, net.proto.source, *[t for l in net.deploy_layers for t in l.tops
                                                 if not l.kind.is_input]} <= constants
    # and no identifier anywhere holds anything but plain ASCII (no NFKC aliasing either)
    idents = []
    for n in ast.walk(tree):
        idents += [getattr(n, f) for f in ("id", "attr", "arg", "name") if isinstance(getattr(n, f, None), str)]
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            idents += [a.asname or a.name for a in n.names]
    bad = [i for i in idents if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", i)]
    assert not bad
    # a spec string may occur in the source only inside a string literal
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    assert "__import__" not in {tok.string for tok in tokens if tok.type == tokenize.NAME}
    stripped = "".join(tok.string for tok in tokens if tok.type != tokenize.STRING)
    hostile = payload_strings(net)
    assert len(hostile) >= 7
    for s in hostile:
        assert s not in stripped, s
    mod = exec_model(source, tmp_path)
    assert mod.DESCRIPTION == net.description and mod.SOURCE == net.proto.source
    assert not marker.exists()


def exec_model(source: str, folder: Path):
    (folder / "model.py").write_text(source)
    spec = importlib.util.spec_from_file_location("generated_model", folder / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_issue_description_runs_nothing(tmp_path):
    """The issue's case: a description that closes the docstring and calls os.system."""
    marker = tmp_path / "p"
    text = ('name: "t" description: %s layer { name: "d" type: "Input" input_param { shape: [2, 3] } } '
            'layer { name: "fc" type: "InnerProduct" bottom: "d" inner_product_param { num_output: 2 } }')
    desc = f'x"""\nimport os; os.system(\'touch {marker}\')\n"""'
    net = zoo.from_text(text % json.dumps(desc))
    assert net.description == desc
    mod = exec_model(T.generate(net, W.for_net(net, 0))[0], tmp_path)
    assert mod.DESCRIPTION == desc
    assert not marker.exists()


def test_torch_forward_and_loss_of_the_hostile_spec(hostile, tmp_path):
    """The generated module, run in this process: every blob and the loss are the
    reference's (so no two names share a module or a variable), and nothing is touched."""
    from conftest import require_engine
    require_engine("torch")
    import torch
    from zoo import data, reference
    path, marker = hostile
    net = zoo.load(path)
    weights = W.for_net(net, 0)
    source, ctx = T.generate(net, weights)
    model = getattr(exec_model(source, tmp_path), T.class_name(net.name))().double()
    model.load_state_dict({k: torch.from_numpy(v.astype("float64")) for k, v in ctx.state.items()})
    model.eval()
    feed = data.make(net, 0)
    ref = reference.forward(net, weights, feed)
    args = {ctx.v(b): torch.from_numpy(feed[b]).double() for b in net.data_inputs + net.labels}
    with torch.no_grad():
        blobs = model(**{ctx.v(b): args[ctx.v(b)] for b in net.data_inputs}, return_all=True)
        loss = model.training_loss(**args)
    for blob, value in blobs.items():
        assert abs(value.numpy() - ref[blob]).max() < 1e-9, blob
    assert abs(float(loss) - float(ref["loss"])) < 1e-9
    assert not marker.exists()


def test_torch_names_are_unique_and_clear_of_python_and_nn_module(hostile):
    path, _ = hostile
    net = zoo.load(path)
    _, ctx = T.generate(net, W.for_net(net, 0))
    blobs = [t for l in net.layers for t in l.tops]
    variables = [ctx.v(b) for b in blobs]
    assert len(set(variables)) == len(variables)
    assert not set(variables) & T.LOCAL_RESERVED
    attrs = [ctx.attr(l) for l in net.layers]
    assert len(set(attrs)) == len(attrs)
    assert not set(attrs) & T.ATTR_RESERVED
    assert T.class_name("f") != "F" and T.class_name("path") != "Path"
    assert T.class_name("1net").isidentifier()


def test_torch_reserved_attributes_cover_nn_module():
    from conftest import require_engine
    require_engine("torch")
    import torch
    public = {n for n in dir(torch.nn.Module()) if not n.startswith("_")}
    assert public <= T.NN_MODULE_ATTRS, sorted(public - T.NN_MODULE_ATTRS)


def test_unique_names_suffixes_and_shadows():
    names = UniqueNames(lambda s: re.sub(r"\W", "_", s), reserved={"self"}, shadows=["_output"])
    assert [names.name(k) for k in ["fc.1", "fc_1", "fc-1", "self", "a_output", "a"]] == \
        ["fc_1", "fc_1_2", "fc_1_3", "self_2", "a_output", "a_2"]
    assert names.name("fc_1") == "fc_1_2"      # the same key keeps its name
    assert names.fresh("fc.1") == "fc_1_4"


@pytest.fixture(scope="module")
def verified(hostile):
    path, marker = hostile
    results = zoo.verify([str(path)], FORWARD_ENGINES, mode="forward")
    return {r.engine: r for r in results}, marker


@pytest.mark.parametrize("engine", FORWARD_ENGINES)
def test_every_engine_computes_the_hostile_spec(verified, engine):
    from conftest import require_engine
    require_engine(engine)
    results, marker = verified
    r = results[engine]
    assert r.status == "pass", f"{engine}: {r.status} {r.reason} {r.first_bad_layer}"
    assert not marker.exists()


@pytest.fixture(scope="module")
def built(hostile, tmp_path_factory):
    """Each engine's build of the hostile spec, kept (verify's own builds of a one-off spec
    are transient)."""
    out = tmp_path_factory.mktemp("builds")
    cache = {}

    def get(engine):
        from conftest import require_engine
        require_engine(engine)
        if engine not in cache:
            cache[engine] = zoo.build(zoo.load(hostile[0]), engine, out=out / engine)
        return cache[engine]
    return get


def test_mxnet_symbol_names_are_unique_and_plain(hostile, built):
    b = built("mxnet")
    meta = b.manifest["meta"]
    graph = json.loads((b.path / f"{meta['prefix']}-symbol.json").read_text())
    names = [n["name"] for n in graph["nodes"]]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n) for n in names)
    outputs = {f"{n['name']}_output" for n in graph["nodes"] if n["op"] != "null"}
    assert not outputs & set(names)           # no op's NAME_output is another symbol
    symbols = meta["symbols"]
    assert len(set(symbols.values())) == len(symbols)


def test_onnx_names_are_unique_and_blobs_keep_theirs(hostile, built):
    import onnx
    b = built("onnx")
    model = onnx.load(str(b.path / "model.onnx"))
    nodes = [n.name for n in model.graph.node]
    assert len(set(nodes)) == len(nodes)
    produced = [o for n in model.graph.node for o in n.output]
    values = produced + [i.name for i in model.graph.initializer] + [i.name for i in model.graph.input]
    assert len(set(values)) == len(values)
    net = zoo.load(hostile[0])
    assert {t for l in net.deploy_layers if not l.kind.is_input for t in l.tops} <= set(produced)


def test_caffe_prototxt_round_trips_every_name(hostile, built):
    from zoo.converters import caffe as C
    b = built("caffe")
    net = zoo.load(hostile[0])
    parsed = text_format.Parse((b.path / C.TRAIN_VAL).read_text(), C.pb2().NetParameter())
    layers = [l.name for l in parsed.layer]
    assert len(set(layers)) == len(layers)
    assert {l.name for l in net.layers} <= set(layers)
    tops = [t for l in parsed.layer for t in l.top]
    assert len(set(tops)) == len(tops)
    assert {t for l in net.layers for t in l.tops} <= set(tops)


def test_keras_layer_names_are_unique_and_recorded(hostile, built):
    b = built("tensorflow")
    meta = b.manifest["meta"]
    config = json.loads(zipfile.ZipFile(b.path / "model.keras").read("config.json"))
    names = [l["name"] for l in config["config"]["layers"]]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", n) for n in names)
    assert set(meta["blob_layers"].values()) <= set(names)


def test_caffe_refuses_a_name_equal_to_its_own_split_names():
    from zoo.converters import caffe as C
    from zoo.converters.registry import Unsupported
    text = ('name: "s" layer { name: "in" type: "Input" top: "a" input_param { shape: [2, 3] } } '
            'layer { name: "r1" type: "ReLU" bottom: "a" top: "%s" } '
            'layer { name: "r2" type: "TanH" bottom: "a" } '
            'layer { name: "sum" type: "Eltwise" bottom: "%s" bottom: "r2" }')
    ok = zoo.from_text(text % ("b", "b"))
    C.check_split_names(C._net(ok, W.for_net(ok, 0), False, C.CaffeNames(ok)).param)
    clash = zoo.from_text(text % ("a_in_0_split_1", "a_in_0_split_1"))
    with pytest.raises(Unsupported, match="a_in_0_split_1"):
        C.check_split_names(C._net(clash, W.for_net(clash, 0), False, C.CaffeNames(clash)).param)


def test_mxnet_exposes_every_colliding_blob_correctly(hostile, built):
    """What verify runs to name the first bad layer: every blob, each its own."""
    from zoo import data, isolation, reference
    b = built("mxnet")
    net = zoo.load(hostile[0])
    weights, feed = W.for_net(net, 0), data.make(net, 0, include_labels=False)
    res = isolation.run("mxnet", "forward", {"artifact": str(b.path), "expose": ["*"]}, feed)
    assert res.ok, res.reason
    ref = reference.forward(net, weights, feed)
    for blob, value in res.arrays.items():
        assert abs(value - ref[blob]).max() < 1e-4, blob
