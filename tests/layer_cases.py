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
