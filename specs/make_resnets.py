"""Writes resnet-56.prototxt and resnet-50.prototxt (run: python specs/make_resnets.py).

The ResNets have too many layers to write by hand; this script is their source, and a test
checks that the committed .prototxt files are what it writes.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent


class Writer:
    def __init__(self):
        self.lines = []

    def add(self, name, type_, bottoms, param="", comment=""):
        b = " ".join(f'bottom: "{x}"' for x in bottoms)
        p = f" {param}" if param else ""
        c = f"   # {comment}" if comment else ""
        self.lines.append(f'layer {{ name: "{name}" type: "{type_}" {b}{p} }}{c}')
        return name

    def conv(self, name, bottom, out, k, stride=1, pad=0, comment=""):
        s = f" stride: {stride}" if stride != 1 else ""
        pd = f" pad: {pad}" if pad else ""
        return self.add(name, "Convolution", [bottom], f"convolution_param {{ num_output: {out} "
                        f"kernel_size: {k}{s}{pd} bias_term: false }}", comment)

    def bn(self, name, bottom):
        return self.add(name, "BatchNorm", [bottom])

    def relu(self, name, bottom):
        return self.add(name, "ReLU", [bottom])


def resnet56() -> str:
    w = Writer()
    w.lines += [
        "# ResNet-56 for CIFAR-10 (docs/networks.md, \"ResNet-56\"): He et al.'s CIFAR ResNet,",
        "# 3 stages of 9 basic blocks (two 3x3 convs each), 16/32/64 channels, global average",
        "# pool 8x8, FC 10. The survey's engines differed (projection vs zero-padded shortcuts,",
        "# ReLU after the add or not, BN with or without scale). zoo: conv -> BN -> ReLU, ReLU",
        "# after the add, option-A shortcuts (stride-2 subsampling, then zero channels appended,",
        "# as fb.resnet.torch's shortcutType A: Concat(x, 0 * x)), convs without bias, BN with",
        "# scale and shift. Parameters: 853,018 (BN running statistics are buffers).",
        "# Written by specs/make_resnets.py.",
        'name: "resnet-56"',
        'description: "ResNet-56: CIFAR-10, option-A shortcuts, BN with scale"',
        'source: "He et al. 2016 (arXiv 1512.03385) sec. 4.2; HKBU dlbench, github.com/hclhkbu/dlbench; docs/networks.md"',
        "train { lr: 0.01 momentum: 0.9 weight_decay: 0.0001 batch_cpu: 128 batch_gpu: 128 }",
        "",
        'layer { name: "data" type: "Input" input_param { shape: [128, 3, 32, 32] } }',
        'layer { name: "label" type: "Input" input_param { shape: [128] dtype: INT64 } }',
    ]
    x = w.relu("relu0", w.bn("bn0", w.conv("conv0", "data", 16, 3, pad=1)))
    channels = 16
    for stage, width in enumerate((16, 32, 64), start=1):
        for block in range(1, 10):
            pre = f"s{stage}b{block}"
            stride = 2 if stage > 1 and block == 1 else 1
            y = w.relu(f"{pre}_relu1", w.bn(f"{pre}_bn1", w.conv(f"{pre}_conv1", x, width, 3, stride, 1)))
            y = w.bn(f"{pre}_bn2", w.conv(f"{pre}_conv2", y, width, 3, 1, 1))
            shortcut = x
            if width != channels:   # option A: subsample, then append zero channels
                sub = w.add(f"{pre}_sub", "Pooling", [x], "pooling_param { pool: MAX kernel_size: 1 "
                            "stride: 2 round_mode: FLOOR }", "stride-2 subsampling")
                zero = w.add(f"{pre}_zero", "Eltwise", [sub, sub], "eltwise_param { operation: SUM "
                             "coeff: [0, 0] }", "zeros of the same shape")
                shortcut = w.add(f"{pre}_pad", "Concat", [sub, zero], "", f"{channels} -> {width} channels")
                channels = width
            x = w.relu(f"{pre}_relu2", w.add(f"{pre}_add", "Eltwise", [y, shortcut]))
    x = w.add("gap", "Pooling", [x], "pooling_param { pool: AVE global_pooling: true }", "8x8 -> 1x1")
    x = w.add("flat", "Flatten", [x])
    x = w.add("fc", "InnerProduct", [x], "inner_product_param { num_output: 10 }")
    w.add("loss", "SoftmaxWithLoss", [x, "label"])
    return "\n".join(w.lines) + "\n"


def resnet50() -> str:
    w = Writer()
    w.lines += [
        "# ResNet-50 on synthetic 224x224 inputs, 1000 classes (docs/networks.md, \"ResNet-50\"):",
        "# the standard bottleneck ResNet [3, 4, 6, 3], widths 64/256, 128/512, 256/1024,",
        "# 512/2048; conv1 7x7/2 pad 3, max pool 3/2 pad 1, convs without bias, BN with scale and",
        "# shift, projection shortcuts (1x1 conv + BN) where the shape changes, global average",
        "# pool, FC 1000. As torchvision's resnet50, the stride of a downsampling block sits in",
        "# its 3x3 conv. Parameters: 25,557,032 (torchvision's count).",
        "# Written by specs/make_resnets.py.",
        'name: "resnet-50"',
        'description: "ResNet-50: synthetic 3x224x224, bottleneck [3, 4, 6, 3]"',
        'source: "He et al. 2016 (arXiv 1512.03385); torchvision resnet50; docs/networks.md"',
        "train { lr: 0.01 momentum: 0.9 weight_decay: 0.0001 batch_cpu: 16 batch_gpu: 64 }",
        "",
        'layer { name: "data" type: "Input" input_param { shape: [16, 3, 224, 224] } }',
        'layer { name: "label" type: "Input" input_param { shape: [16] dtype: INT64 } }',
    ]
    x = w.relu("relu1", w.bn("bn1", w.conv("conv1", "data", 64, 7, 2, 3, "224 -> 112")))
    x = w.add("pool1", "Pooling", [x], "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 "
              "round_mode: FLOOR }", "112 -> 56")
    channels = 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for block in range(1, blocks + 1):
            pre = f"layer{stage}.{block - 1}"
            stride = 2 if stage > 1 and block == 1 else 1
            y = w.relu(f"{pre}.relu1", w.bn(f"{pre}.bn1", w.conv(f"{pre}.conv1", x, width, 1)))
            y = w.relu(f"{pre}.relu2", w.bn(f"{pre}.bn2", w.conv(f"{pre}.conv2", y, width, 3, stride, 1)))
            y = w.bn(f"{pre}.bn3", w.conv(f"{pre}.conv3", y, 4 * width, 1))
            shortcut = x
            if stride != 1 or channels != 4 * width:
                shortcut = w.bn(f"{pre}.downsample.bn",
                                w.conv(f"{pre}.downsample.conv", x, 4 * width, 1, stride))
                channels = 4 * width
            x = w.relu(f"{pre}.relu3", w.add(f"{pre}.add", "Eltwise", [y, shortcut]))
    x = w.add("gap", "Pooling", [x], "pooling_param { pool: AVE global_pooling: true }", "7x7 -> 1x1")
    x = w.add("flat", "Flatten", [x])
    x = w.add("fc", "InnerProduct", [x], "inner_product_param { num_output: 1000 }")
    w.add("loss", "SoftmaxWithLoss", [x, "label"])
    return "\n".join(w.lines) + "\n"


GENERATED = {"resnet-56.prototxt": resnet56, "resnet-50.prototxt": resnet50}

if __name__ == "__main__":
    for fname, make in GENERATED.items():
        (HERE / fname).write_text(make())
        print("wrote", HERE / fname)
