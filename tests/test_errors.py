"""A corpus of broken specs: each gets one clear line naming file, place and layer; exit 2."""

import json
import subprocess
import sys

import pytest

OK_HEAD = 'name: "t"\nlayer { name: "x" type: "Input" input_param { shape: [2, 3, 8, 8] } }\n'

# name -> (spec text, expected substrings of the one error line); prototxt unless .json
CORPUS = {
    "unknown_type": (OK_HEAD + 'layer { name: "c" type: "Conv" bottom: "x" }\n',
                     [":3:", "layer 'c' (Conv)", "unknown layer type 'Conv'", "known types:", "Convolution"]),
    "python_layer": (OK_HEAD + 'layer { name: "py" type: "Python" bottom: "x" }\n',
                     [":3:", "layer 'py'", "never accepted"]),
    "missing_bottom": (OK_HEAD + 'layer { name: "r" type: "ReLU" bottom: "nope" }\n',
                       [":3:", "layer 'r' (ReLU)", "bottom 'nope' is not produced"]),
    "cycle": (OK_HEAD + 'layer { name: "a" type: "Eltwise" bottom: "x" bottom: "b" }\n'
              'layer { name: "b" type: "ReLU" bottom: "a" }\n', ["cycle:", "a -> b -> a"]),
    "duplicate_name": (OK_HEAD + 'layer { name: "x" type: "ReLU" bottom: "x" top: "y" }\n',
                       [":3:", "layer 'x'", "duplicate layer name"]),
    "in_place": (OK_HEAD + 'layer { name: "r" type: "ReLU" bottom: "x" top: "x" }\n',
                 [":3:", "layer 'r'", "already produced", "no in-place"]),
    "concat_mismatch": (OK_HEAD + 'layer { name: "p" type: "Pooling" bottom: "x" pooling_param { kernel_size: 2 stride: 2 round_mode: FLOOR } }\n'
                        'layer { name: "cat" type: "Concat" bottom: "x" bottom: "p" }\n',
                        [":4:", "layer 'cat' (Concat)", "mismatched shapes"]),
    "fc_needs_flatten": (OK_HEAD + 'layer { name: "fc" type: "InnerProduct" bottom: "x" inner_product_param { num_output: 3 } }\n',
                         [":3:", "layer 'fc' (InnerProduct)", "add a Flatten"]),
    "kernel_too_large": (OK_HEAD + 'layer { name: "c" type: "Convolution" bottom: "x" convolution_param { num_output: 2 kernel_size: 11 pad: 1 } }\n',
                         [":3:", "layer 'c' (Convolution)", "larger than the padded input"]),
    "zero_size": (OK_HEAD + 'layer { name: "c" type: "Convolution" bottom: "x" convolution_param { num_output: 0 kernel_size: 3 } }\n',
                  [":3:", "layer 'c'", "num_output must be > 0"]),
    "negative_input": ('name: "t"\nlayer { name: "x" type: "Input" input_param { shape: [2, -3] } }\n',
                       [":2:", "layer 'x' (Input)", "must be positive"]),
    "missing_required": (OK_HEAD + 'layer { name: "c" type: "Convolution" bottom: "x" convolution_param { num_output: 4 } }\n',
                         [":3:", "layer 'c'", "convolution_param.kernel_size is required"]),
    "missing_round_mode": (OK_HEAD + 'layer { name: "p" type: "Pooling" bottom: "x" pooling_param { kernel_size: 2 } }\n',
                           [":3:", "layer 'p'", "round_mode is required"]),
    "missing_divisor": (OK_HEAD + 'layer { name: "p" type: "Pooling" bottom: "x" pooling_param { pool: AVE kernel_size: 3 pad: 1 round_mode: FLOOR } }\n',
                        [":3:", "layer 'p'", "avg_divisor is required"]),
    "unknown_field": (OK_HEAD + 'layer { name: "c" type: "ReLU" bottom: "x" negative_slope: 0.1 }\n',
                      [":3:", "has no field named \"negative_slope\""]),
    "wrong_param": (OK_HEAD + 'layer { name: "r" type: "ReLU" bottom: "x" pooling_param { kernel_size: 2 } }\n',
                    [":3:", "layer 'r'", "pooling_param does not apply"]),
    "syntax": ('name: "t"\nlayer { name: "x" type: "Input" input_param { shape: [2, 3 } }\n', [":2:"]),
    "deep_nesting": ('name: "t"\n' + "layer { " * 200 + "}" * 200 + "\n", [":2:", "nesting deeper"]),
    "no_name": ('layer { name: "x" type: "Input" input_param { shape: [2] } }\n', ["has no name"]),
    "json_unknown_field.json": (json.dumps({"name": "t", "layer": [{"name": "x", "type": "Input", "bogus": 1}]}),
                                ["$.layer[0]", "layer 'x'", "bogus"]),
    "json_nan.json": ('{"name": "t", "layer": [{"name": "x", "type": "Input", "input_param": {"shape": [NaN]}}]}',
                      ["NaN is not a number zoo accepts"]),
    "json_duplicate_key.json": ('{"name": "t", "name": "u", "layer": []}', ["duplicate key 'name'"]),
    "json_deep.json": ('{"name": "t", "layer": ' + "[" * 100 + "]" * 100 + "}", ["nesting"]),
    "json_bad_type.json": (json.dumps({"name": "t", "layer": [{"name": "x", "type": "Input",
                                                                 "input_param": {"shape": ["a"]}}]}),
                           ["$.layer[0].input_param.shape[0]", "layer 'x'"]),
    "json_huge_int.json": ('{"name": "t", "layer": [{"name": "x", "type": "Input", "input_param": {"shape": [1' + "0" * 30 + ']}}]}',
                           ["$.layer[0].input_param.shape[0]", "maximum"]),
    "json_layer_error.json": (json.dumps({"name": "t", "layer": [
        {"name": "x", "type": "Input", "input_param": {"shape": [2, 3]}},
        {"name": "c", "type": "Convolution", "bottom": ["x"], "convolution_param": {"num_output": 2, "kernel_size": 3}}]}),
                              ["$.layer[1]", "layer 'c' (Convolution)", "takes an (N, C, H, W) blob"]),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_broken_spec(case, tmp_path):
    text, expected = CORPUS[case]
    path = tmp_path / (case if case.endswith(".json") else f"{case}.prototxt")
    path.write_text(text)
    r = subprocess.run([sys.executable, "-m", "zoo.cli", "validate", str(path)], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert lines[0].startswith(str(path)), lines[0]
    for s in expected:
        assert s in lines[0], f"{s!r} not in {lines[0]!r}"


def test_validate_good_specs_exit_0():
    r = subprocess.run([sys.executable, "-m", "zoo.cli", "validate", "alexnet-r", "resnet-56"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_unknown_name_is_a_clear_error():
    r = subprocess.run([sys.executable, "-m", "zoo.cli", "show", "no-such-net"], capture_output=True, text=True)
    assert r.returncode == 2 and "no zoo network or file named 'no-such-net'" in r.stderr
    assert "Traceback" not in r.stderr
