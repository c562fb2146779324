"""Writes resnet-18, mobilenet-v2, efficientnet-b0 and vit-b-16 (run: python specs/make_modern.py).

Today's ImageNet networks, each exactly as torchvision defines it (torchvision/models/
resnet.py, mobilenetv2.py, efficientnet.py, vision_transformer.py): the same layers, sizes,
paddings and epsilons, so the same parameter counts (a test checks them and that the
committed .prototxt files are what this script writes). What zoo leaves out, because it
is the identity in inference and in `zoo verify`: dropout in the classifiers (kept as
Dropout layers) and EfficientNet's stochastic depth. Layer names follow torchvision's
state_dict keys where there is one.
"""

import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_resnets import Writer  # noqa: E402

TRAIN = "train { lr: 0.01 momentum: 0.9 weight_decay: 0.0001 batch_cpu: 16 batch_gpu: 64 }"


def header(name, what, source, comment, batch=16):
    return [f"# {line}" for line in comment] + [
        "# Written by specs/make_modern.py.",
        f'name: "{name}"',
        f'description: "{what}"',
        f'source: "{source}"',
        TRAIN if batch == 16 else TRAIN.replace("batch_cpu: 16 batch_gpu: 64",
                                                f"batch_cpu: {batch} batch_gpu: {4 * batch}"),
        "",
        f'layer {{ name: "data" type: "Input" input_param {{ shape: [{batch}, 3, 224, 224] }} }}',
        f'layer {{ name: "label" type: "Input" input_param {{ shape: [{batch}] dtype: INT64 }} }}',
    ]


def classifier(w, x, channels, dropout=None):
    """Global average pool, (dropout), FC 1000, loss: torchvision's avgpool + classifier."""
    x = w.add("avgpool", "Pooling", [x], "pooling_param { pool: AVE global_pooling: true }",
              "AdaptiveAvgPool2d(1): 7x7 -> 1x1")
    x = w.add("flatten", "Flatten", [x])
    if dropout is not None:
        x = w.add("classifier.0", "Dropout", [x], f"dropout_param {{ dropout_ratio: {dropout} }}")
    name = "fc" if dropout is None else "classifier.1"
    x = w.add(name, "InnerProduct", [x], "inner_product_param { num_output: 1000 }",
              f"{channels} -> 1000")
    w.add("loss", "SoftmaxWithLoss", [x, "label"])
    return "\n".join(w.lines) + "\n"


def conv_bn(w, pre, bottom, out, k, stride=1, group=1, act=None, bn="bn", conv="conv"):
    """torchvision's Conv2dNormActivation: conv (no bias, pad (k-1)//2) -> BN -> act."""
    g = f" group: {group}" if group != 1 else ""
    s = f" stride: {stride}" if stride != 1 else ""
    p = f" pad: {(k - 1) // 2}" if k > 1 else ""
    x = w.add(f"{pre}{conv}", "Convolution", [bottom], f"convolution_param {{ num_output: {out} "
              f"kernel_size: {k}{s}{p}{g} bias_term: false }}")
    x = w.add(f"{pre}{bn}", "BatchNorm", [x])
    if act == "ReLU6":
        x = w.add(f"{pre}relu6", "Clip", [x], "clip_param { min: 0 max: 6 }", "ReLU6")
    elif act is not None:
        x = w.add(f"{pre}{act.lower()}", act, [x])
    return x


# --- ResNet-18 (torchvision/models/resnet.py: BasicBlock, [2, 2, 2, 2]) -----------------------
def resnet18() -> str:
    w = Writer()
    w.lines += header("resnet-18", "ResNet-18: 3x224x224, basic blocks [2, 2, 2, 2]",
                      "He et al. 2016 (arXiv 1512.03385); torchvision resnet18 (models/resnet.py)", [
        "ResNet-18 as torchvision's resnet18: conv1 7x7/2 pad 3, max pool 3/2 pad 1 (floor),",
        "4 stages of 2 basic blocks (two 3x3 convs) of 64/128/256/512 channels, the first block",
        "of stages 2-4 with stride 2 and a projection shortcut (1x1 conv + BN), convs without",
        "bias, BN eps 1e-5 with scale and shift, global average pool, FC 1000.",
        "Parameters: 11,689,512 (torchvision's count).",
    ])
    x = w.conv("conv1", "data", 64, 7, 2, 3, "224 -> 112")
    x = w.relu("relu", w.bn("bn1", x))
    x = w.add("maxpool", "Pooling", [x], "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 "
              "round_mode: FLOOR }", "112 -> 56")
    channels = 64
    for stage, width in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            pre = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            y = w.relu(f"{pre}.relu1", w.bn(f"{pre}.bn1", w.conv(f"{pre}.conv1", x, width, 3, stride, 1)))
            y = w.bn(f"{pre}.bn2", w.conv(f"{pre}.conv2", y, width, 3, 1, 1))
            shortcut = x
            if stride != 1 or channels != width:
                shortcut = w.bn(f"{pre}.downsample.1",
                                w.conv(f"{pre}.downsample.0", x, width, 1, stride))
                channels = width
            x = w.relu(f"{pre}.relu2", w.add(f"{pre}.add", "Eltwise", [y, shortcut]))
    return classifier(w, x, 512)


# --- MobileNet V2 (torchvision/models/mobilenetv2.py) ------------------------------------------
def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible (min_value = divisor)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def mobilenet_v2() -> str:
    w = Writer()
    w.lines += header("mobilenet-v2", "MobileNet V2: 3x224x224, inverted residuals, ReLU6",
                      "Sandler et al. 2018 (arXiv 1801.04381); torchvision mobilenet_v2 "
                      "(models/mobilenetv2.py)", [
        "MobileNet V2 as torchvision's mobilenet_v2 (width 1.0): conv 3x3/2 to 32, then",
        "inverted residual blocks (t, c, n, s) = (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2)",
        "(6,96,3,1) (6,160,3,2) (6,320,1,1): 1x1 expand (t != 1) -> 3x3 depthwise (stride s",
        "in a stage's first block) -> 1x1 linear projection, each conv without bias + BN (eps",
        "1e-5), ReLU6 (Clip 0..6) after expand and depthwise, a residual add where stride 1",
        "and channels match; conv 1x1 to 1280 + BN + ReLU6, global average pool, dropout 0.2,",
        "FC 1000. Parameters: 3,504,872 (torchvision's count).",
    ])
    setting = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1)]
    channels = make_divisible(32)
    x = conv_bn(w, "features.0.", "data", channels, 3, stride=2, act="ReLU6", conv="0", bn="1")
    index = 1
    for t, c, n, s in setting:
        out = make_divisible(c)
        for i in range(n):
            stride = s if i == 0 else 1
            pre = f"features.{index}.conv."
            hidden = int(round(channels * t))
            y, part = x, 0
            if t != 1:
                y = conv_bn(w, f"{pre}{part}.", y, hidden, 1, act="ReLU6", conv="0", bn="1")
                part += 1
            y = conv_bn(w, f"{pre}{part}.", y, hidden, 3, stride=stride, group=hidden,
                        act="ReLU6", conv="0", bn="1")
            y = conv_bn(w, pre, y, out, 1, conv=f"{part + 1}", bn=f"{part + 2}")
            if stride == 1 and channels == out:
                y = w.add(f"features.{index}.add", "Eltwise", [x, y])
            x, channels = y, out
            index += 1
    x = conv_bn(w, f"features.{index}.", x, 1280, 1, act="ReLU6", conv="0", bn="1")
    return classifier(w, x, 1280, dropout=0.2)


# --- EfficientNet-B0 (torchvision/models/efficientnet.py) --------------------------------------
def efficientnet_b0() -> str:
    w = Writer()
    w.lines += header("efficientnet-b0", "EfficientNet-B0: 3x224x224, MBConv with SE, SiLU",
                      "Tan and Le 2019 (arXiv 1905.11946); torchvision efficientnet_b0 "
                      "(models/efficientnet.py)", [
        "EfficientNet-B0 as torchvision's efficientnet_b0: conv 3x3/2 to 32 + BN + SiLU, then",
        "MBConv blocks (expand, kernel, stride, in, out, layers) = (1,3,1,32,16,1)",
        "(6,3,2,16,24,2) (6,5,2,24,40,2) (6,3,2,40,80,3) (6,5,1,80,112,3) (6,5,2,112,192,4)",
        "(6,3,1,192,320,1): 1x1 expand + BN + SiLU (expand != 1), kxk depthwise (pad (k-1)/2,",
        "stride in a stage's first block) + BN + SiLU, squeeze-and-excitation (mean over H, W;",
        "1x1 conv with bias to max(1, in/4) + SiLU; 1x1 conv with bias back + Sigmoid; the",
        "product broadcast over H, W), 1x1 projection + BN, a residual add where stride 1 and",
        "channels match (stochastic depth: the identity in inference, left out); conv 1x1 to",
        "1280 + BN + SiLU, global average pool, dropout 0.2, FC 1000. BN eps 1e-5 (torchvision's",
        "default for B0-B7). Parameters: 5,288,548 (torchvision's count).",
    ])
    setting = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
               (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
               (6, 3, 1, 192, 320, 1)]
    x = conv_bn(w, "features.0.", "data", 32, 3, stride=2, act="SiLU", conv="0", bn="1")
    for stage, (t, k, s, cin, cout, n) in enumerate(setting, start=1):
        for i in range(n):
            channels, stride = (cin, s) if i == 0 else (cout, 1)
            pre = f"features.{stage}.{i}.block."
            hidden = make_divisible(channels * t)
            y, part = x, 0
            if hidden != channels:
                y = conv_bn(w, f"{pre}{part}.", y, hidden, 1, act="SiLU", conv="0", bn="1")
                part += 1
            y = conv_bn(w, f"{pre}{part}.", y, hidden, k, stride=stride, group=hidden,
                        act="SiLU", conv="0", bn="1")
            part += 1
            y = squeeze_excitation(w, f"{pre}{part}.", y, hidden, max(1, channels // 4))
            y = conv_bn(w, f"{pre}{part + 1}.", y, cout, 1, conv="0", bn="1")
            if stride == 1 and channels == cout:
                y = w.add(f"features.{stage}.{i}.add", "Eltwise", [x, y])
            x = y
    x = conv_bn(w, "features.8.", x, 1280, 1, act="SiLU", conv="0", bn="1")
    return classifier(w, x, 1280, dropout=0.2)


def squeeze_excitation(w, pre, x, channels, squeeze):
    """torchvision.ops.SqueezeExcitation with SiLU: x * sigmoid(fc2(silu(fc1(mean(x)))))."""
    s = w.add(f"{pre}avgpool", "Reduce", [x], "reduce_param { operation: MEAN axis: [2, 3] "
              "keepdims: true }", "(N, C, 1, 1)")
    s = w.add(f"{pre}fc1", "Convolution", [s], f"convolution_param {{ num_output: {squeeze} kernel_size: 1 }}")
    s = w.add(f"{pre}silu", "SiLU", [s])
    s = w.add(f"{pre}fc2", "Convolution", [s], f"convolution_param {{ num_output: {channels} kernel_size: 1 }}")
    s = w.add(f"{pre}sigmoid", "Sigmoid", [s])
    return w.add(f"{pre}scale", "Eltwise", [x, s], "eltwise_param { operation: PROD }",
                 "(N, C, H, W) * (N, C, 1, 1)")


# --- ViT-B/16 (torchvision/models/vision_transformer.py) ---------------------------------------
def vit_b_16() -> str:
    w = Writer()
    d, heads, mlp, layers, tokens = 768, 12, 3072, 12, 197
    head_dim = d // heads
    w.lines += header("vit-b-16", "ViT-B/16: 3x224x224, 16x16 patches, 12 layers, width 768",
                      "Dosovitskiy et al. 2021 (arXiv 2010.11929); torchvision vit_b_16 "
                      "(models/vision_transformer.py)", [
        "ViT-B/16 as torchvision's vit_b_16: conv 16x16/16 (with bias) to 768 channels, the",
        "14x14 patches as 196 tokens, a learned class token first (197 tokens), a learned",
        "position embedding added; 12 encoder blocks: LayerNorm (eps 1e-6), multi-head",
        "self-attention (12 heads of 64; one in_proj 768 -> 2304 split into q, k, v;",
        "softmax(q k^T / 8) v; out_proj 768 -> 768), residual add, LayerNorm, MLP 768 -> 3072",
        "-> GELU (exact) -> 768, residual add; a final LayerNorm, the class token's output, FC",
        "1000. Dropout rates are 0 in torchvision's vit_b_16: no Dropout layers.",
        "Parameters: 86,567,656 (torchvision's count).",
    ], batch=8)
    x = w.add("conv_proj", "Convolution", ["data"], f"convolution_param {{ num_output: {d} "
              "kernel_size: 16 stride: 16 }", "224 -> 14x14 patches")
    x = w.add("patches", "Reshape", [x], f"reshape_param {{ shape: [0, {d}, 196] }}")
    x = w.add("tokens", "Transpose", [x], "transpose_param { order: [0, 2, 1] }", "(N, 196, 768)")
    cls = w.add("class_token", "Parameter", [x], f"parameter_param {{ shape: [1, {d}] }}")
    x = w.add("cat", "Concat", [cls, x], "concat_param { axis: 1 }", "(N, 197, 768)")
    x = w.add("encoder.pos_embedding", "Bias", [x], f"bias_param {{ shape: [{tokens}, {d}] }}")
    for i in range(layers):
        pre = f"encoder.layers.encoder_layer_{i}."
        y = w.add(f"{pre}ln_1", "LayerNorm", [x], "layer_norm_param { eps: 1e-6 }")
        y = attention(w, f"{pre}self_attention.", y, d, heads, head_dim, tokens)
        x = w.add(f"{pre}add_1", "Eltwise", [y, x])
        y = w.add(f"{pre}ln_2", "LayerNorm", [x], "layer_norm_param { eps: 1e-6 }")
        y = w.add(f"{pre}mlp.0", "InnerProduct", [y], f"inner_product_param {{ num_output: {mlp} }}")
        y = w.add(f"{pre}mlp.1", "GELU", [y])
        y = w.add(f"{pre}mlp.3", "InnerProduct", [y], f"inner_product_param {{ num_output: {d} }}")
        x = w.add(f"{pre}add_2", "Eltwise", [x, y])
    x = w.add("encoder.ln", "LayerNorm", [x], "layer_norm_param { eps: 1e-6 }")
    x = w.add("class_out", "Gather", [x], "gather_param { axis: 1 index: 0 }", "x[:, 0]")
    x = w.add("heads.head", "InnerProduct", [x], "inner_product_param { num_output: 1000 }")
    w.add("loss", "SoftmaxWithLoss", [x, "label"])
    return "\n".join(w.lines) + "\n"


def attention(w, pre, x, d, heads, head_dim, tokens):
    """nn.MultiheadAttention(d, heads, batch_first=True) on (x, x, x), no mask."""
    qkv = w.add(f"{pre}in_proj", "InnerProduct", [x], f"inner_product_param {{ num_output: {3 * d} }}",
                "in_proj_weight, in_proj_bias")
    w.lines.append(f'layer {{ name: "{pre}split" type: "Slice" bottom: "{qkv}" top: "{pre}q" '
                   f'top: "{pre}k" top: "{pre}v" slice_param {{ axis: -1 size: [{d}, {d}, {d}] }} }}')
    parts = []
    for name in "qkv":
        h = w.add(f"{pre}{name}_heads", "Reshape", [f"{pre}{name}"],
                  f"reshape_param {{ shape: [0, {tokens}, {heads}, {head_dim}] }}")
        parts.append(w.add(f"{pre}{name}_t", "Transpose", [h], "transpose_param { order: [0, 2, 1, 3] }"))
    q, k, v = parts
    a = w.add(f"{pre}scores", "MatMul", [q, k], f"matmul_param {{ transpose_b: true scale: "
              f"{1 / math.sqrt(head_dim):g} }}", "q k^T / sqrt(64)")
    a = w.add(f"{pre}softmax", "Softmax", [a], "softmax_param { axis: -1 }")
    o = w.add(f"{pre}context", "MatMul", [a, v])
    o = w.add(f"{pre}context_t", "Transpose", [o], "transpose_param { order: [0, 2, 1, 3] }")
    o = w.add(f"{pre}merge", "Reshape", [o], f"reshape_param {{ shape: [0, {tokens}, {d}] }}")
    return w.add(f"{pre}out_proj", "InnerProduct", [o], f"inner_product_param {{ num_output: {d} }}")


GENERATED = {"resnet-18.prototxt": resnet18, "mobilenet-v2.prototxt": mobilenet_v2,
             "efficientnet-b0.prototxt": efficientnet_b0, "vit-b-16.prototxt": vit_b_16}
PARAMS = {"resnet-18": 11_689_512, "mobilenet-v2": 3_504_872, "efficientnet-b0": 5_288_548,
          "vit-b-16": 86_567_656}   # torchvision's num_params of each model's weights


if __name__ == "__main__":
    for fname, make in GENERATED.items():
        (HERE / fname).write_text(make())
        print(f"wrote specs/{fname}")
