"""The zoo's networks, the spec formats and the schema."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import zoo
from zoo import spec as S
from zoo.schema import json_schema

# shared/networks.md's parameter counts; every zoo entry must be here
EXPECTED_PARAMS = {
    "fcn-s": 117_997_696, "fcn-r": 14_205_962, "alexnet-s": 62_378_344, "alexnet-r": 85_098,
    "resnet-56": 853_018, "resnet-50": 25_557_032, "lstm-32": 6_180_624, "lstm-64": 6_180_624,
    "softmax-mnist": 7_850, "mlp-mnist": 109_386, "twolayer": 101_110, "linreg": 3,
    # torchvision's counts (specs/make_modern.py)
    "resnet-18": 11_689_512, "mobilenet-v2": 3_504_872, "efficientnet-b0": 5_288_548,
    "vit-b-16": 86_567_656,
}
ROOT = Path(__file__).resolve().parent.parent


def test_every_zoo_entry_is_expected():
    assert sorted(S.zoo_names()) == sorted(EXPECTED_PARAMS)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_counts(name):
    assert zoo.load(name).params == EXPECTED_PARAMS[name]


def test_known_shapes():
    assert zoo.load("alexnet-s").shapes["flat"][1:] == (9216,)
    assert zoo.load("alexnet-r").shapes["flat"][1:] == (576,)
    assert zoo.load("resnet-56").shapes["s3b9_relu2"][1:] == (64, 8, 8)
    assert zoo.load("resnet-50").shapes["pool1"][1:] == (64, 56, 56)
    assert zoo.load("lstm-64").shapes["fc"][1:] == (64, 10000)


def test_flops_resnet50_matches_the_usual_figure():
    # torchvision's resnet50: about 4.1 GMACs per 224x224 image
    assert 4.0e9 < zoo.load("resnet-50").with_batch(1).macs < 4.2e9


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_prototxt_json_round_trip(name, tmp_path):
    net = zoo.load(name)
    j = tmp_path / f"{name}.json"
    j.write_text(zoo.convert(name, "json"))
    back = zoo.load(j)
    assert back.proto == net.proto
    p = tmp_path / f"{name}.prototxt"
    p.write_text(zoo.convert(j, "prototxt"))
    assert zoo.load(p).proto == net.proto
    assert json.loads(j.read_text())["layer"][0]["input_param"]["shape"][0] == net.batch  # ints, not strings


def test_committed_resnets_are_generated():
    sys.path.insert(0, str(ROOT / "specs"))
    import make_resnets
    for fname, make in make_resnets.GENERATED.items():
        assert (ROOT / "specs" / fname).read_text() == make(), f"rerun specs/make_resnets.py ({fname})"


def test_committed_modern_networks_are_generated():
    sys.path.insert(0, str(ROOT / "specs"))
    import make_modern
    for fname, make in make_modern.GENERATED.items():
        assert (ROOT / "specs" / fname).read_text() == make(), f"rerun specs/make_modern.py ({fname})"
    assert make_modern.PARAMS == {k: EXPECTED_PARAMS[k] for k in make_modern.PARAMS}


def test_modern_networks_known_shapes_and_macs():
    vit = zoo.load("vit-b-16")
    assert vit.shapes["cat"][1:] == (197, 768)
    assert vit.shapes["encoder.layers.encoder_layer_0.self_attention.scores"][1:] == (12, 197, 197)
    assert zoo.load("mobilenet-v2").shapes["features.18.1"][1:] == (1280, 7, 7)
    assert zoo.load("efficientnet-b0").shapes["features.8.1"][1:] == (1280, 7, 7)
    # torchvision's documented GFLOPS (multiply-adds) per 224x224 image
    for name, gmacs in (("resnet-18", 1.81), ("mobilenet-v2", 0.30), ("efficientnet-b0", 0.39),
                        ("vit-b-16", 17.56)):
        assert zoo.load(name).with_batch(1).macs / 1e9 == pytest.approx(gmacs, abs=0.006), name


def test_committed_schema_is_generated():
    assert json.loads((ROOT / "specs" / "zoo.schema.json").read_text()) == json_schema()


def test_schema_defaults_documented_in_proto_match_layer_code():
    # the proto's defaults are what the layer code reads: spot-check the ones engines rely on
    from zoo import spec_pb2
    assert spec_pb2.LRNParam().alpha == 1.0 and spec_pb2.LRNParam().local_size == 5
    assert abs(spec_pb2.BatchNormParam().eps - 1e-5) < 1e-12
    assert spec_pb2.ConvolutionParam().stride == 1 and spec_pb2.ConvolutionParam().bias_term


def test_generated_pb2_is_current(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools not installed (dev only)")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'specs'}",
                    f"--python_out={tmp_path}", str(ROOT / "specs" / "zoo.proto")], check=True)
    assert (tmp_path / "zoo_pb2.py").read_text() == (ROOT / "zoo" / "spec_pb2.py").read_text()


def test_weights_are_deterministic_and_independent_of_other_layers():
    from zoo import weights as W
    a = W.make(zoo.load("alexnet-r"), seed=3)
    b = W.make(zoo.load("alexnet-r"), seed=3)
    c = W.make(zoo.load("alexnet-r"), seed=4)
    assert all((a[k] == b[k]).all() for k in a)
    assert not (a["conv1.weight"] == c["conv1.weight"]).all()
    assert all(v.dtype.name == "float32" for v in a.values())


def test_weights_file_round_trip_and_checks(tmp_path):
    from zoo import weights as W
    from zoo.errors import SpecError
    net = zoo.load("linreg")
    w = W.make(net)
    W.save(w, tmp_path / "w.npz")
    back = W.load(tmp_path / "w.npz", net)
    assert (back["fc.weight"] == w["fc.weight"]).all()
    w["fc.weight"] = w["fc.weight"][:, :1]
    W.save(w, tmp_path / "bad.npz")
    with pytest.raises(SpecError, match="fc.weight"):
        W.load(tmp_path / "bad.npz", net)


def test_spec_with_weights_file(tmp_path):
    from zoo import weights as W
    net = zoo.load("linreg")
    w = W.make(net, seed=7)
    W.save(w, tmp_path / "linreg.npz")
    text = S.to_prototxt(net.proto) + 'weights: "linreg.npz"\n'
    (tmp_path / "linreg.prototxt").write_text(text)
    net2 = zoo.load(tmp_path / "linreg.prototxt")
    assert (W.for_net(net2)["fc.weight"] == w["fc.weight"]).all()
