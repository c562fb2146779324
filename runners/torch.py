"""PyTorch: runs the generated model.py + weights.safetensors of a build.

device "cpu" or "gpuN" (-> cuda:N). TF32 is off (fp32 verification must be fp32). Dropout
is the identity in verify's training step (its masks cannot be compared across engines)
and active in bench. With options {"dtype": "float64"} (the verify training oracle) the
model and inputs are float64.

Runner options {"optimize": True} (zoo bench --optimize): the model's forward and its
training loss run through torch.compile (Inductor). A network with 2-D convolutions is
channels-last in both configurations: the generated model's own layout (converters/torch.py).

The oracle's conditioning probe (options {"round_float32": True, "jitter_seed": k}, float64
models only, see zoo/verifier.py): every leaf module's output, and the gradient flowing back
into it, is rounded to float32, and with k > 0 each float input is moved by a random
~2^-24 relative amount: float64 arithmetic that makes float32's rounding decisions at layer
boundaries, i.e. an idealised float32 engine.

The branch-matched oracle (zoo/branches.py, float64 models only): a train job whose inputs
carry an engine's branch decisions for its ReLU and Clip layers, step by step, forces those
branches in each step.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np

from .base import Runner as BaseRunner


class Runner(BaseRunner):
    engine = "torch"

    def load(self) -> None:
        import torch
        from safetensors.torch import load_file

        self.torch = torch
        if self.threads:
            torch.set_num_threads(int(self.threads))
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        index = self.gpu_index()
        self.dev = torch.device("cpu" if index is None else f"cuda:{index}")
        meta = self.manifest["meta"]
        self.meta = meta
        spec = importlib.util.spec_from_file_location(f"zoo_model_{self.net.name.replace('-', '_')}",
                                                      self.dir / "model.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)   # zoo's own generated code, hash-checked by the manifest
        self.model = getattr(mod, meta["class"])()
        self.model.load_state_dict(load_file(str(self.dir / "weights.safetensors")))
        self.dtype = torch.float64 if meta.get("dtype") == "float64" else torch.float32
        self.model.to(device=self.dev, dtype=self.dtype).eval()
        self._compiled: dict = {}          # "forward" / "loss" -> torch.compile'd callable
        self._forcing: list = []           # the branch-matched oracle's hooks (_force_branches)
        self._build_state: dict | None = None
        if self.options.get("round_float32"):
            if self.dtype != torch.float64:
                raise ValueError("round_float32 is a probe of the float64 oracle")
            _round_layer_outputs(torch, self.model)

    def save_build_state(self) -> bool:
        """Every parameter and buffer (BatchNorm's statistics and batch count) as loaded."""
        if self._build_state is None:
            self._build_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return True

    def _rewind(self) -> None:
        for handle in self._forcing:
            handle.remove()
        self._forcing = []
        self.model.load_state_dict(self._build_state)     # copied into the same tensors
        for p in self.model.parameters():
            p.grad = None
        self.model.eval()

    def cuda_missing(self):
        torch = self.torch
        if not torch.cuda.is_available():
            return f"torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}"
        return None

    def _jitter(self, name: str, t):
        """The probe's input perturbation (see the module docstring); identity otherwise."""
        seed = int(self.options.get("jitter_seed", 0))
        if not seed or not t.is_floating_point():
            return t
        g = self.torch.Generator().manual_seed(seed * 1000 + sorted(self.meta["input_names"]).index(name))
        noise = self.torch.randn(t.shape, generator=g, dtype=self.torch.float64).to(t.device)
        return t * (1 + 2.0**-24 * noise)

    def _tensors(self, inputs: dict, names: list[str]) -> dict:
        out = {}
        for blob in names:
            a = inputs[blob]
            t = self.torch.from_numpy(np.ascontiguousarray(a)).to(self.dev)
            out[self.meta["input_names"][blob]] = t if a.dtype.kind in "iu" else self._jitter(blob, t.to(self.dtype))
        return out

    def _data(self, inputs):
        return self._tensors(inputs, self.net.data_inputs)

    def forward(self, inputs, expose=None):
        if self.optimize and expose is None:
            self._prepare_optimized(inputs, "infer")
            self.model.eval()
            feed = self._data(inputs)
            with self.torch.no_grad():
                out = self._compiled["forward"](**feed)
            heads = self.outputs_for(None)
            outs = out if isinstance(out, (list, tuple)) else [out]
            return {b: o.detach().cpu().contiguous().numpy() for b, o in zip(heads, outs)}
        with self.torch.no_grad():
            blobs = self.model(**self._data(inputs), return_all=True)
        return {b: blobs[b].detach().cpu().numpy() for b in self.outputs_for(expose)}

    # --- the optimised configuration -------------------------------------------------------
    def optimizations(self, mode):
        done = ["torch.compile (Inductor)"]
        if getattr(self.model, "channels_last", False):
            done.append("channels-last memory format (the model's own, as in the default)")
        return done

    def _prepare_optimized(self, inputs, mode) -> None:
        """Compile forward and the loss (once each)."""
        if "forward" not in self._compiled:
            self._compiled["forward"] = self.torch.compile(self.model)
            self._compiled["loss"] = self.torch.compile(self.model.training_loss)

    def _loss_fn(self, inputs):
        """The training loss to step: compiled under optimize, the model's own otherwise."""
        if not self.optimize:
            return self.model.training_loss
        self._prepare_optimized(inputs, "train")
        return self._compiled["loss"]

    def _train_feed(self, inputs):
        return self._tensors(inputs, self.net.data_inputs + self.net.labels)

    def _train_mode(self, dropout: bool) -> None:
        self.model.train()
        if not dropout:
            for m in self.model.modules():
                if isinstance(m, self.torch.nn.Dropout):
                    m.eval()

    def train_forward(self, inputs, expose):
        self._train_mode(dropout=False)
        with self.torch.no_grad():
            blobs = self.model(**self._data(inputs), return_all=True)
        return {b: blobs[b].detach().cpu().numpy() for b in expose}

    def _force_branches(self, forced: list[dict]) -> None:
        """The branch-matched oracle (zoo/branches.py): in step i, each ReLU or Clip module
        listed in forced[i] outputs its input where the engine took the linear part and the
        kink's value elsewhere, so its gradient flows exactly where the engine's did; a
        module a step does not list computes as usual. `self._step` says the step."""
        from zoo import branches
        torch = self.torch
        if self.dtype != torch.float64:
            raise ValueError("forced branches are an option of the float64 oracle")
        modules = dict(self.model.named_children())
        by_name = {l.name: l for l in self.net.layers}
        plans: dict[str, dict[int, tuple]] = {}
        for step, codes in enumerate(forced):
            for name, c in codes.items():
                code = torch.from_numpy(c).to(self.dev)
                lo, hi = branches.kinks(by_name[name])
                fill = torch.where(code == branches.BELOW, lo, hi if hi is not None else lo).to(self.dtype)
                plans.setdefault(name, {})[step] = (code == branches.LINEAR, fill)

        for name, plan in plans.items():
            def hook(module, args, out, plan=plan):
                if self._step not in plan:
                    return None
                linear, fill = plan[self._step]
                x = args[0]
                if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
                    # the output keeps the input's memory order, as the module's own does,
                    # so the layers after it sum in the same order as without forcing
                    cl = torch.channels_last
                    linear, fill = linear.contiguous(memory_format=cl), fill.contiguous(memory_format=cl)
                return torch.where(linear, x, fill)
            self._forcing.append(modules[self.meta["modules"][name]].register_forward_hook(hook))

    def _optimizer(self):
        t = self.net.train
        params = [p for p in self.model.parameters() if p.requires_grad]
        return self.torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)

    def train_step(self, inputs, steps=1):
        from zoo import branches
        inputs, forced = branches.split_inputs(inputs)
        if forced:
            self._force_branches(forced)
        loss_fn = self._loss_fn(inputs)
        self._train_mode(dropout=False)
        opt = self._optimizer()
        feed = self._train_feed(inputs)
        losses = []
        for self._step in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(**feed)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        state = self.model.state_dict()
        weights = {canon: state[tname].detach().cpu().contiguous().numpy()
                   for canon, tname in self.meta["names"].items()}
        return losses, weights

    def make_iteration(self, inputs, mode):
        torch = self.torch
        sync = torch.cuda.synchronize if self.dev.type == "cuda" else (lambda: None)
        if mode == "infer":
            if self.optimize:
                self._prepare_optimized(inputs, mode)
            model = self._compiled["forward"] if self.optimize else self.model
            self.model.eval()
            feed = self._data(inputs)

            def infer():
                with torch.no_grad():
                    model(**feed)
                sync()
            return infer
        loss_fn = self._loss_fn(inputs)
        self._train_mode(dropout=True)
        opt = self._optimizer()
        feed = self._train_feed(inputs)

        def train():
            opt.zero_grad(set_to_none=True)
            loss_fn(**feed).backward()
            opt.step()
            sync()
        return train

    def layer_times(self, inputs, mode):
        """Per-module forward (and backward, in train mode) times from hooks around every
        module, synchronised; a separate pass from the clean timing; the median of
        LAYER_REPS steps after one untimed."""
        torch = self.torch
        sync = torch.cuda.synchronize if self.dev.type == "cuda" else (lambda: None)
        times: dict[str, dict[str, float]] = {}
        handles, starts = [], {}
        for name, m in self.model.named_children():
            def pre(mod, args, name=name):
                sync()
                starts[name] = time.perf_counter()

            def post(mod, args, out, name=name):
                sync()
                times.setdefault(name, {"forward_s": 0.0, "backward_s": 0.0})["forward_s"] += time.perf_counter() - starts[name]

            def bpre(mod, grad_out, name=name):
                sync()
                starts["b:" + name] = time.perf_counter()

            def bpost(mod, grad_in, grad_out, name=name):
                sync()
                times.setdefault(name, {"forward_s": 0.0, "backward_s": 0.0})["backward_s"] += time.perf_counter() - starts["b:" + name]
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
            if mode == "train":
                handles += [m.register_full_backward_pre_hook(bpre), m.register_full_backward_hook(bpost)]
        from .base import LAYER_REPS
        step = self.make_iteration(inputs, mode)
        step()                       # warm-up, not counted
        runs = []
        for _ in range(LAYER_REPS):
            times.clear()
            step()
            runs.append({k: dict(v) for k, v in times.items()})
        for h in handles:
            h.remove()
        spec_names = self._spec_names()
        return [{"layer": spec_names.get(k, k),
                 "forward_s": float(np.median([r.get(k, {}).get("forward_s", 0.0) for r in runs])),
                 "backward_s": float(np.median([r.get(k, {}).get("backward_s", 0.0) for r in runs]))}
                for k in runs[-1]]

    def _spec_names(self) -> dict[str, str]:
        """Module attribute -> spec layer name, from the build's parameter names (a layer
        without parameters keeps its attribute name, the spec's name made an identifier)."""
        return {tname.rsplit(".", 1)[0]: canon.rsplit(".", 1)[0]
                for canon, tname in self.meta["names"].items() if "." in tname}

    def device_name(self) -> str:
        if self.dev.type == "cuda":
            return self.torch.cuda.get_device_name(self.dev)
        return "cpu"

    def peak_device_memory_mb(self):
        if self.dev.type == "cuda":
            return self.torch.cuda.max_memory_allocated(self.dev) / 2**20
        return None

    def versions(self):
        return {"torch": self.torch.__version__}


def _round_layer_outputs(torch, model) -> None:
    class RoundToFloat32(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.to(torch.float32).to(x.dtype)

        @staticmethod
        def backward(ctx, g):
            return g.to(torch.float32).to(g.dtype)

    def hook(module, args, out):
        return RoundToFloat32.apply(out) if torch.is_tensor(out) and out.is_floating_point() else out

    for m in model.modules():
        if m is not model and not any(True for _ in m.children()):
            m.register_forward_hook(hook)
