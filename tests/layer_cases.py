"""One small network per layer type and per case where engines traditionally disagree.

The rows drive the engine tests: every engine verifies each row it supports, forward and
(where it trains) one training step. Adding a layer type adds a row here. A row's name
starts with the layer type it is about, so `pytest -k "mxnet and LRN"` picks one test.
"""

IMG = 'layer { name: "x" type: "Input" input_param { shape: [2, 4, 8, 8] } }\n'
LABEL4 = 'layer { name: "label" type: "Input" input_param { shape: [2] dtype: INT64 } }\n'


def head(fc_in: str, classes: int = 3) -> str:
    """Flatten + InnerProduct + SoftmaxWithLoss after a 4-D blob, so rows can train."""
    return (f'layer {{ name: "flat" type: "Flatten" bottom: "{fc_in}" }}\n'
            f'layer {{ name: "fc" type: "InnerProduct" bottom: "flat" '
            f'inner_product_param {{ num_output: {classes} }} }}\n'
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" }\n')


def spec(name: str, body: str) -> str:
    return f'name: "{name}"\ntrain {{ lr: 0.1 momentum: 0.9 weight_decay: 0.01 }}\n{body}'


def conv(name, bottom, extra=""):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" '
            f'convolution_param {{ num_output: 6 kernel_size: 3 {extra} }} }}\n')


def pool(name, bottom, params):
    return f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" pooling_param {{ {params} }} }}\n'


CASES = {
    "InnerProduct": spec("t-ip", 'layer { name: "x" type: "Input" input_param { shape: [2, 5] } }\n'
                          + LABEL4 + 'layer { name: "fc" type: "InnerProduct" bottom: "x" '
                          'inner_product_param { num_output: 3 } }\n'
                          'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" }\n'),
    "InnerProduct-nobias": spec("t-ipnb", 'layer { name: "x" type: "Input" input_param { shape: [2, 5] } }\n'
                                 'layer { name: "y" type: "Input" input_param { shape: [2, 3] } }\n'
                                 'layer { name: "fc" type: "InnerProduct" bottom: "x" '
                                 'inner_product_param { num_output: 3 bias_term: false } }\n'
                                 'layer { name: "loss" type: "EuclideanLoss" bottom: "fc" bottom: "y" }\n'),
    "Convolution": spec("t-conv", IMG + LABEL4 + conv("c", "x", "pad: 1 stride: 2") + head("c")),
    "Convolution-group-dilation": spec("t-convgd", IMG + LABEL4 + conv("c", "x", "pad: 2 dilation: 2 group: 2")
                                       + head("c")),
    "Pooling-MAX-floor": spec("t-maxf", IMG + LABEL4 + pool("p", "x", "pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR")
                           + head("p")),
    "Pooling-MAX-ceil-pad": spec("t-maxc", IMG + LABEL4 + pool("p", "x", "pool: MAX kernel_size: 3 stride: 2 pad: 1 "
                                                      "round_mode: CEIL") + head("p")),
    # 5x5, k 2, s 2, pad 1: ceil gives 4, but the 4th window would start in the right
    # padding, so Caffe's (and PyTorch's) rule makes it 3
    "Pooling-MAX-ceil-clip": spec("t-maxclip", IMG.replace("8, 8", "5, 5") + LABEL4 +
                               pool("p", "x", "pool: MAX kernel_size: 2 stride: 2 pad: 1 round_mode: CEIL")
                               + head("p")),
    "Pooling-AVE-ceil-padded": spec("t-avecp", IMG + LABEL4 + pool("p", "x", "pool: AVE kernel_size: 3 stride: 2 pad: 1 "
                                                         "round_mode: CEIL avg_divisor: PADDED") + head("p")),
    "Pooling-AVE-floor-VALID": spec("t-avefv", IMG + LABEL4 + pool("p", "x", "pool: AVE kernel_size: 3 stride: 2 pad: 1 "
                                                          "round_mode: FLOOR avg_divisor: VALID") + head("p")),
    "Pooling-AVE-ceil-nopad": spec("t-avec", IMG + LABEL4 + pool("p", "x", "pool: AVE kernel_size: 3 stride: 2 "
                                                        "round_mode: CEIL avg_divisor: PADDED") + head("p")),
    "Pooling-global": spec("t-gap", IMG + LABEL4 + conv("c", "x") + pool("p", "c", "pool: AVE global_pooling: true")
                        + head("p")),
    "ReLU-Sigmoid-TanH": spec("t-act", IMG + LABEL4 + conv("c", "x") +
                        'layer { name: "r" type: "ReLU" bottom: "c" }\n'
                        'layer { name: "s" type: "Sigmoid" bottom: "r" }\n'
                        'layer { name: "t" type: "TanH" bottom: "s" }\n' + head("t")),
    "LRN": spec("t-lrn", IMG + LABEL4 + conv("c", "x") +
                'layer { name: "n" type: "LRN" bottom: "c" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }\n'
                + head("n")),
    "Dropout-Softmax": spec("t-drop", 'layer { name: "x" type: "Input" input_param { shape: [2, 5] } }\n' + LABEL4 +
                            'layer { name: "d" type: "Dropout" bottom: "x" dropout_param { dropout_ratio: 0.3 } }\n'
                            'layer { name: "fc" type: "InnerProduct" bottom: "d" inner_product_param { num_output: 3 } }\n'
                            'layer { name: "sm" type: "Softmax" bottom: "fc" }\n'
                            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" }\n'),
    "Reshape-Concat": spec("t-rc", IMG + LABEL4 + conv("c", "x", "pad: 1") +
                           'layer { name: "r" type: "Reshape" bottom: "c" reshape_param { shape: [0, 3, -1, 8] } }\n'
                           'layer { name: "r2" type: "Reshape" bottom: "x" reshape_param { shape: [0, 2, 16, 8] } }\n'
                           'layer { name: "cat" type: "Concat" bottom: "r" bottom: "r2" concat_param { axis: 1 } }\n'
                           + head("cat")),
    "Eltwise": spec("t-elt", IMG + LABEL4 + conv("a", "x", "pad: 1") + conv("b", "x", "pad: 1") +
                    'layer { name: "s" type: "Eltwise" bottom: "a" bottom: "b" eltwise_param { coeff: [0.5, -2] } }\n'
                    'layer { name: "p" type: "Eltwise" bottom: "s" bottom: "a" eltwise_param { operation: PROD } }\n'
                    'layer { name: "m" type: "Eltwise" bottom: "p" bottom: "b" eltwise_param { operation: MAX } }\n'
                    + head("m")),
    "BatchNorm": spec("t-bn", IMG + LABEL4 + conv("c", "x") +
                       'layer { name: "bn" type: "BatchNorm" bottom: "c" batch_norm_param { eps: 0.001 } }\n'
                       + head("bn")),
    "BatchNorm-2d-noaffine": spec("t-bn2", 'layer { name: "x" type: "Input" input_param { shape: [4, 5] } }\n'
                                   'layer { name: "label" type: "Input" input_param { shape: [4] dtype: INT64 } }\n'
                                   'layer { name: "fc0" type: "InnerProduct" bottom: "x" inner_product_param { num_output: 6 } }\n'
                                   'layer { name: "bn" type: "BatchNorm" bottom: "fc0" batch_norm_param { scale_bias: false } }\n'
                                   'layer { name: "fc" type: "InnerProduct" bottom: "bn" inner_product_param { num_output: 3 } }\n'
                                   'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" }\n'),
    "Embedding-LSTM": spec("t-lstm", 'layer { name: "ids" type: "Input" input_param { shape: [2, 5] dtype: INT64 } }\n'
                           'layer { name: "label" type: "Input" input_param { shape: [2, 5] dtype: INT64 } }\n'
                           'layer { name: "emb" type: "Embedding" bottom: "ids" embedding_param { input_dim: 11 num_output: 4 } }\n'
                           'layer { name: "lstm" type: "LSTM" bottom: "emb" lstm_param { num_output: 6 } }\n'
                           'layer { name: "fc" type: "InnerProduct" bottom: "lstm" inner_product_param { num_output: 7 } }\n'
                           'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" }\n'),
}

# --- issue 14: today's vocabulary ------------------------------------------------------------
SEQ = 'layer { name: "x" type: "Input" input_param { shape: [2, 4, 6] } }\n'   # (N, T, D)


def layer(name, type_, bottoms, params="", tops=()):
    b = " ".join(f'bottom: "{x}"' for x in ([bottoms] if isinstance(bottoms, str) else bottoms))
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {params} }}\n'


def act(type_, params=""):
    """A conv, then the activation, then the head: the activation's input is trained."""
    return IMG + LABEL4 + conv("c", "x", "pad: 1") + layer("a", type_, "c", params) + head("a")


def seq_head(blob):
    """Flatten + InnerProduct + SoftmaxWithLoss after an (N, T, D) blob."""
    return (layer("flat", "Flatten", blob) + layer("fc", "InnerProduct", "flat",
                                                   "inner_product_param { num_output: 3 }")
            + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" }\n')


CASES.update({
    # per-axis kernel, stride, dilation; asymmetric pads; depthwise with stride 2
    "Convolution-per-axis": spec("t-convhw", IMG + LABEL4 + conv("c", "x").replace(
        "kernel_size: 3", "kernel_h: 3 kernel_w: 1 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 "
        "dilation_h: 1 dilation_w: 2") + head("c")),
    "Convolution-asymmetric-pad": spec("t-convap", IMG + LABEL4 + conv(
        "c", "x", "stride: 2 pad_top: 0 pad_bottom: 1 pad_left: 2 pad_right: 1") + head("c")),
    "Convolution-depthwise-stride2": spec("t-convdw", IMG + LABEL4 + layer(
        "c", "Convolution", "x", "convolution_param { num_output: 4 kernel_size: 3 stride: 2 "
        "pad: 1 group: 4 }") + head("c")),
    "Convolution-depthwise-multiplier": spec("t-convdm", IMG + LABEL4 + layer(
        "c", "Convolution", "x", "convolution_param { num_output: 8 kernel_size: 3 pad: 1 "
        "group: 4 bias_term: false }") + head("c")),
    # asymmetric pads with CEIL: 8x8, k 3, s 2, top 0 bottom 1 -> ceil(6/2)+1 = 4, kept
    "Pooling-MAX-asymmetric-ceil": spec("t-maxac", IMG + LABEL4 + pool(
        "p", "x", "pool: MAX kernel_size: 3 stride: 2 pad_top: 0 pad_bottom: 1 pad_left: 1 "
        "pad_right: 0 round_mode: CEIL") + head("p")),
    # 8x8, k 2, s 2, top 0 bottom 1: ceil(7/2)+1 = 5, but the 5th window starts at 8 = H + 0
    # (in the bottom padding), so the CEIL rule drops it: 4
    "Pooling-MAX-asymmetric-ceil-clip": spec("t-maxacc", IMG + LABEL4 + pool(
        "p", "x", "pool: MAX kernel_size: 2 stride: 2 pad_top: 0 pad_bottom: 1 pad_left: 0 "
        "pad_right: 1 round_mode: CEIL") + head("p")),
    "Pooling-AVE-asymmetric-ceil-PADDED": spec("t-aveacp", IMG + LABEL4 + pool(
        "p", "x", "pool: AVE kernel_size: 3 stride: 2 pad_top: 1 pad_bottom: 0 pad_left: 0 "
        "pad_right: 2 round_mode: CEIL avg_divisor: PADDED") + head("p")),
    "Pooling-AVE-asymmetric-ceil-VALID": spec("t-aveacv", IMG + LABEL4 + pool(
        "p", "x", "pool: AVE kernel_size: 3 stride: 2 pad_top: 1 pad_bottom: 0 pad_left: 0 "
        "pad_right: 2 round_mode: CEIL avg_divisor: VALID") + head("p")),
    "Pooling-per-axis": spec("t-poolhw", IMG + LABEL4 + pool(
        "p", "x", "pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 "
        "round_mode: FLOOR") + head("p")),
    # activations
    "Clip-ReLU6": spec("t-relu6", act("Clip", "clip_param { min: 0 max: 0.5 }")),
    "LeakyReLU": spec("t-leaky", act("LeakyReLU", "leaky_relu_param { negative_slope: 0.2 }")),
    "PReLU": spec("t-prelu", act("PReLU")),
    "PReLU-shared": spec("t-prelus", act("PReLU", "prelu_param { channel_shared: true }")),
    "ELU": spec("t-elu", act("ELU", "elu_param { alpha: 0.7 }")),
    "HardSigmoid": spec("t-hsig", act("HardSigmoid", "hard_sigmoid_param { alpha: 0.3 beta: 0.4 }")),
    "HardSwish": spec("t-hswish", act("HardSwish")),
    "SiLU": spec("t-silu", act("SiLU")),
    "GELU": spec("t-gelu", act("GELU")),
    "GELU-tanh": spec("t-gelut", act("GELU", "gelu_param { approximate: TANH }")),
    "Softmax-axis2": spec("t-smax2", act("Softmax", "softmax_param { axis: 2 }")),
    "LogSoftmax": spec("t-lsmax", act("LogSoftmax", "softmax_param { axis: 1 }")),
    # broadcasting arithmetic: squeeze-and-excitation, and each axis broadcast
    "Eltwise-SE-broadcast": spec("t-se", IMG + LABEL4 + conv("c", "x", "pad: 1") + layer(
        "sq", "Reduce", "c", "reduce_param { operation: MEAN axis: [2, 3] keepdims: true }")
        + layer("ex", "Convolution", "sq", "convolution_param { num_output: 6 kernel_size: 1 }")
        + layer("gate", "Sigmoid", "ex")
        + layer("se", "Eltwise", ["c", "gate"], "eltwise_param { operation: PROD }") + head("se")),
    "Eltwise-broadcast-axes": spec("t-bcast", IMG + LABEL4 + conv("c", "x", "pad: 1")
        + layer("r1", "Reduce", "c", "reduce_param { operation: MEAN axis: 1 keepdims: true }")
        + layer("e1", "Eltwise", ["c", "r1"], "eltwise_param { operation: SUM coeff: [1, -0.5] }")
        + layer("r2", "Reduce", "c", "reduce_param { operation: MAX axis: 2 keepdims: true }")
        + layer("e2", "Eltwise", ["e1", "r2"], "eltwise_param { operation: SUB }")
        + layer("r3", "Reduce", "c", "reduce_param { operation: SUM axis: 3 keepdims: true }")
        + layer("s3", "Sigmoid", "r3")
        + layer("e3", "Eltwise", ["e2", "s3"], "eltwise_param { operation: DIV }")
        + layer("e4", "Eltwise", ["r2", "e3"], "eltwise_param { operation: MAX }") + head("e4")),
    "Scale-Bias": spec("t-scale", IMG + LABEL4 + conv("c", "x", "pad: 1")
        + layer("s", "Scale", "c", "scale_param { shape: [6, 1, 1] bias_term: true }")
        + layer("b", "Bias", "s", "bias_param { shape: [1, 8, 8] }") + head("b")),
    # ViT's class token, position embedding and x[:, 0]
    "Parameter-Concat-Gather": spec("t-param", SEQ + LABEL4
        + layer("cls", "Parameter", "x", "parameter_param { shape: [1, 6] }")
        + layer("cat", "Concat", ["cls", "x"], "concat_param { axis: 1 }")
        + layer("pos", "Bias", "cat", "bias_param { shape: [5, 6] }")
        + layer("g", "Gather", "pos", "gather_param { axis: 1 index: 0 }")
        + layer("fc", "InnerProduct", "g", "inner_product_param { num_output: 3 }")
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" }\n'),
    "Reduce": spec("t-reduce", IMG + LABEL4 + conv("c", "x", "pad: 1")
        + layer("m", "Reduce", "c", "reduce_param { operation: MEAN axis: [2, 3] }")
        + layer("s", "Reduce", "c", "reduce_param { operation: SUM axis: [1, -1] }")
        + layer("x2", "Reduce", "c", "reduce_param { operation: MAX axis: -2 }")
        + layer("fm", "Flatten", "x2")
        + layer("cat", "Concat", ["m", "s", "fm"], "concat_param { axis: 1 }")
        + layer("fc", "InnerProduct", "cat", "inner_product_param { num_output: 3 }")
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" }\n'),
    # to NHWC and back around a per-position InnerProduct (ConvNeXt's pointwise layers), and
    # a Flatten of the NHWC blob: TensorFlow computes in NHWC, so both directions must hold
    "Transpose-NHWC-round-trip": spec("t-nhwc", IMG + LABEL4 + conv("c", "x", "pad: 1")
        + layer("t1", "Transpose", "c", "transpose_param { order: [0, 2, 3, 1] }")
        + layer("pw", "InnerProduct", "t1", "inner_product_param { num_output: 5 axis: -1 }")
        + layer("t2", "Transpose", "pw", "transpose_param { order: [0, 3, 1, 2] }")
        + conv("c2", "t2", "pad: 1")
        + layer("t3", "Transpose", "c2", "transpose_param { order: [0, 3, 2, 1] }") + head("t3")),
    "Slice-unequal": spec("t-slice", IMG + LABEL4 + conv("c", "x", "pad: 1")
        + layer("s", "Slice", "c", "slice_param { axis: 1 size: [1, 2, 3] }", tops=("a", "b", "d"))
        + layer("w", "Slice", "d", "slice_param { axis: -1 size: [5, 3] }", tops=("w1", "w2"))
        + layer("cat", "Concat", ["b", "a"], "concat_param { axis: 1 }")
        + layer("f1", "Flatten", "cat") + layer("f2", "Flatten", "w1") + layer("f3", "Flatten", "w2")
        + layer("all", "Concat", ["f3", "f1", "f2"], "concat_param { axis: 1 }")
        + layer("fc", "InnerProduct", "all", "inner_product_param { num_output: 3 }")
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" }\n'),
    "Squeeze-Unsqueeze": spec("t-squeeze", IMG + LABEL4 + conv("c", "x", "pad: 1")
        + layer("m", "Reduce", "c", "reduce_param { operation: MEAN axis: [2, 3] keepdims: true }")
        + layer("sq", "Squeeze", "m", "squeeze_param { axis: [2, 3] }")
        + layer("un", "Unsqueeze", "sq", "unsqueeze_param { axis: [1] }")
        + layer("ip", "InnerProduct", "un", "inner_product_param { num_output: 3 }")
        + layer("sq2", "Squeeze", "ip", "squeeze_param { axis: -2 }")
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "sq2" bottom: "label" }\n'),
    "Gather-axis2": spec("t-gather", IMG + LABEL4 + conv("c", "x", "pad: 1")
        + layer("g", "Gather", "c", "gather_param { axis: 2 index: -3 }") + seq_head("g")),
    "LayerNorm": spec("t-ln", SEQ + LABEL4 + layer("ip", "InnerProduct", "x", "inner_product_param { num_output: 6 }")
        + layer("ln", "LayerNorm", "ip", "layer_norm_param { eps: 1e-6 }") + seq_head("ln")),
    "LayerNorm-chw-noaffine": spec("t-lnchw", IMG + LABEL4 + conv("c", "x", "pad: 1")
        + layer("ln", "LayerNorm", "c", "layer_norm_param { axis: 1 scale_bias: false }") + head("ln")),
    "MatMul-attention": spec("t-attn", SEQ + LABEL4
        + layer("q", "InnerProduct", "x", "inner_product_param { num_output: 6 }")
        + layer("k", "InnerProduct", "x", "inner_product_param { num_output: 6 }")
        + layer("v", "InnerProduct", "x", "inner_product_param { num_output: 6 }")
        + layer("qh", "Reshape", "q", "reshape_param { shape: [0, 4, 2, 3] }")
        + layer("kh", "Reshape", "k", "reshape_param { shape: [0, 4, 2, 3] }")
        + layer("vh", "Reshape", "v", "reshape_param { shape: [0, 4, 2, 3] }")
        + layer("qt", "Transpose", "qh", "transpose_param { order: [0, 2, 1, 3] }")
        + layer("kt", "Transpose", "kh", "transpose_param { order: [0, 2, 1, 3] }")
        + layer("vt", "Transpose", "vh", "transpose_param { order: [0, 2, 1, 3] }")
        + layer("qk", "MatMul", ["qt", "kt"], "matmul_param { transpose_b: true scale: 0.5 }")
        + layer("attn", "Softmax", "qk", "softmax_param { axis: -1 }")
        + layer("av", "MatMul", ["attn", "vt"])
        + layer("o", "Transpose", "av", "transpose_param { order: [0, 2, 1, 3] }")
        + layer("or", "Reshape", "o", "reshape_param { shape: [0, 4, 6] }") + seq_head("or")),
    "MatMul-transpose-a": spec("t-mmta", SEQ + LABEL4
        + layer("ip", "InnerProduct", "x", "inner_product_param { num_output: 3 }")
        + layer("g", "MatMul", ["ip", "x"], "matmul_param { transpose_a: true }") + seq_head("g")),
    "InnerProduct-4d-last-axis": spec("t-ip4", IMG + LABEL4
        + layer("ip", "InnerProduct", "x", "inner_product_param { num_output: 3 axis: -1 }")
        + head("ip")),
})
