"""The config reference: one row per key (or group of keys) with its default as shown and one
line of meaning. `reslab config --defaults` prints it next to each key's actual default, and
README.md's `data` / `model` / `train` tables are generated from it (`reslab config --defaults
--markdown SECTION`; tests/test_readme.py checks the README matches), so the two never drift.

Plain data (and the one Markdown table writer): it sits beside config.py in the layers.
"""
from __future__ import annotations

from . import formatting

# section -> [(keys, default as shown, meaning)] in README order; Markdown inline code allowed.
ROWS: dict[str, list[tuple[tuple[str, ...], str, str]]] = {
    "data": [
        (('source',),
         '`digits`',
         "`digits` (scikit-learn's bundled 8x8 digits), `cifar10` (torchvision format at "
         '`root`), `folder` (class-folder tree), `csv` (images under `root` named in the '
         '`labels` file), `npz` (arrays in the `.npz` file `root`)'),
        (('root',),
         '—',
         'dataset directory; a folder is either `train/ [val/ test/]` subfolders or one tree '
         'split by fractions; for `npz` the `.npz` file'),
        (('labels',),
         '—',
         '`csv`: the labels file (relative to `root`), one row per image: its path relative to'
         ' `root`, its class name, optionally its split `train`/`val`/`test` (classes: the '
         "train rows' labels in natural order)"),
        (('columns',),
         '`{path: path, label: label, split: split}`',
         '`csv`: the header names of those columns'),
        (('arrays',),
         '`{x: x, y: y, split: split, classes: classes}`',
         '`npz`: array names: uint8 images `(N,H,W)`, `(N,H,W,C)` or `(N,C,H,W)`; labels '
         '`0..K-1`; optional split (`0/1/2` or `train/val/test`) and class names'),
        (('download',),
         '`false`',
         '`cifar10` only: download when missing (otherwise an error says where to put the '
         'files)'),
        (('val_fraction', 'test_fraction'),
         '`0.1`, `0.0`',
         'seeded, stratified hold-outs (when the source has no such split)'),
        (('split_seed',),
         '`0`',
         'seed of the hold-out split (kept fixed across repeats, sweeps and comparisons)'),
        (('folds', 'fold'),
         '—',
         'stratified k-fold: `folds: K` with `fold: i` trains on the other folds and validates'
         ' on fold i (`train --folds K` runs them all)'),
        (('max_per_class',),
         '—',
         'first K images per class in natural order (quick subsets)'),
        (('image_size',),
         '—',
         'resize to this square size (after `center_crop`)'),
        (('resize',),
         '—',
         'resize the shorter side first (e.g. 256 before a 224 centre crop)'),
        (('center_crop',),
         '—',
         'centre crop at native resolution (e.g. 63); smaller images are an error'),
        (('augment',),
         '`crop-flip`',
         '`none`, `flip`, `crop`, `crop-flip`, `crop-flip-gray`, `imagenet-phase1`, '
         '`imagenet-phase2`, a policy `trivialaugment` / `randaugment`, or `BASE+POLICY` (e.g.'
         ' `crop-flip+trivialaugment`); batched on the device, random per image'),
        (('pad', 'gray_p', 'flip_p'),
         '`4`, `0.1`, `0.5`',
         'crop padding in pixels; random-grayscale probability; horizontal-flip probability'),
        (('flip',),
         '`random`',
         '`random`, or `alternate` (each image mirrored on alternate epochs, as airbench)'),
        (('jitter',),
         '`{brightness, contrast, saturation, hue}` all null',
         "colour-jitter strengths; null keeps the preset's own (`imagenet-phase1`: "
         '0.1/0.1/0.1, hue 0.1; `imagenet-phase2`: 0.3/0.3/0.3, hue 0.05)'),
        (('crop_scale',),
         '—',
         '`[low, high]` area range of the random-resized crop of the ImageNet presets'),
        (('randaugment',),
         '`{n: 2, m: 9}`',
         'RandAugment ops per image and magnitude (of 0..30)'),
        (('mixup',),
         '`{alpha: 0, cutmix_alpha: 0, prob: 1.0, switch_prob: 0.5}`',
         'Mixup / CutMix per image (soft labels); off while both alphas are 0'),
        (('erasing',),
         '`0`',
         'random-erasing probability per image'),
        (('progressive_resize',),
         '`{start_size: null, end_epoch_fraction: 0.5}`',
         'train on `start_size` images first, growing to full size by that fraction of the '
         'epochs; evaluation is full size'),
        (('format',),
         '`auto`',
         '`srgb`, `linear`, `log` (auto: by file type)'),
        (('normalize',),
         '`dataset`',
         '`dataset` (train-split mean/std), `imagenet`, `none`'),
        (('cache_dir',),
         '`$RESLAB_CACHE` or `~/.cache/reslab`',
         'decoded-tensor cache (checksummed; a damaged entry is rebuilt)'),
        (('skip_bad',),
         '`false`',
         'skip unreadable images with a warning listing them'),
        (('nonfinite',),
         '`error`',
         "float images (EXR, float TIFF) with NaN, inf or values beyond float16's ±65504: "
         '`error` names the file; `clamp` sets NaN to 0 and clamps the rest to ±65504'),
        (('workers',),
         'cores',
         'decoding processes when the cache is built'),
        (('max_pixels',),
         '`90000000`',
         'images over this many pixels are refused from their header (decompression bombs)'),
    ],
    "model": [
        (('arch',),
         '`resnet20`',
         'CIFAR-style `resnet20/32/44/56/110` (3 stages), `resnet10/18/34/50/101` (4 stages); '
         'torchvision `tv:resnet34`, `tv:vgg16`, ...; timm `timm:NAME`; a user module '
         '`path/to/file.py:ClassName` (relative to the config)'),
        (('width',),
         'per arch',
         'base width (16 for resnet20..., 64 for resnet18...)'),
        (('num_classes',),
         'from data',
         'classifier outputs (default: the number of classes the data has)'),
        (('max_params',),
         '—',
         'refuse a model over this many parameters before any weight is allocated and before '
         'any data is read'),
        (('block', 'layers'),
         'per arch',
         '`basic`/`bottleneck`; blocks per stage, e.g. `[2,2,2,2]`'),
        (('stem_width',),
         '`width`',
         'channels of the stem conv'),
        (('stem_kernel', 'kernel_size', 'pool_size'),
         '`3`, `3`, `1`',
         'stem conv, block convs, final average-pool output size'),
        (('dropout',),
         '`0`',
         'before the classifier'),
        (('block_dropout',),
         '`0`',
         'dropout after each conv-BN inside the blocks'),
        (('shortcut',),
         '`projection`',
         "`projection` (1x1 conv) or `zeropad` (the paper's option A)"),
        (('pretrained',),
         '`false`',
         '`true` (library weights from the local torch/timm cache) or a state-dict path (any '
         'arch)'),
        (('pretrained_strict',),
         '`true`',
         '`false`: load the tensors that fit and list the rest'),
        (('head',),
         '`linear`',
         'or `{hidden: [1024], dropout: 0.3, batchnorm: true}`: an MLP head, for `tv:` and '
         '`timm:` backbones only; built-in CIFAR ResNets (`resnet20`...`resnet101`) take '
         '`linear` (regularise with `dropout`), a user module builds its own classifier '
         '(options in `kwargs`); other combinations are a one-line error'),
        (('kwargs',),
         '`{}`',
         "keyword arguments for a user module's constructor or `timm.create_model`"),
    ],
    "train": [
        (('epochs', 'batch_size', 'eval_batch_size'),
         '`10`, `128`, `512`',
         'passes over the training split; images per training step (a last partial batch '
         'that would leave a process fewer than 2 images is dropped each epoch; a model with '
         'BatchNorm layers needs at least 2 per process, so 1 is refused before the run '
         'starts); images per evaluation batch'),
        (('optimizer',),
         '`sgd`',
         '`sgd`, `adam`, `adamw`, `adadelta`'),
        (('lr', 'momentum', 'nesterov', 'weight_decay'),
         '`0.1`, `0.9`, `false`, `5e-4`',
         'learning rate; SGD momentum; Nesterov momentum; L2 weight decay (none on biases and '
         'norms)'),
        (('scheduler',),
         '`cosine`',
         '`none`, `step` (`step_size` epochs, `gamma`), `cosine`, `onecycle`, `plateau`'),
        (('step_size', 'gamma'),
         '`30`, `0.1`',
         'the `step` schedule'),
        (('warmup_epochs',),
         '`0`',
         'linear warm-up'),
        (('plateau',),
         '`{monitor: val_loss, factor: 0.1, patience: 3}`',
         'ReduceLROnPlateau'),
        (('label_smoothing',),
         '`0`',
         'cross-entropy label smoothing'),
        (('early_stopping',),
         '`{enabled: false, monitor: val_acc, min_delta: 0, patience: 5, start_epoch: 0}`',
         'stop when the metric fails to improve on its best by `min_delta` for `patience` '
         'epochs after `start_epoch`'),
        (('monitor',),
         '`val_acc`',
         'metric that picks `best.pt` (`val_acc` or `val_loss`)'),
        (('final_weights',),
         '`best`',
         'weights of the final evaluation: `best` (best.pt) or `last`'),
        (('seed',),
         '`0`',
         'model init, shuffling, augmentation, dropout; a list `[0, 1, 2]` trains one run per '
         'seed'),
        (('device',),
         '`auto`',
         '`auto`, `cpu`, `cuda`, `cuda:N`, `mps`'),
        (('threads',),
         'all cores',
         'CPU threads'),
        (('channels_last', 'compile'),
         '`true`, `false`',
         'memory format; `torch.compile`'),
        (('amp',),
         '`auto`',
         'bf16 autocast where the hardware runs it natively (CUDA, AVX512-BF16/AMX CPUs); '
         '`off`, `bf16`, `fp16` (CUDA, with a grad scaler)'),
        (('deterministic',),
         '`false`',
         'deterministic kernels only (for CUDA; CPU runs are identical run to run at a fixed '
         'thread count without it)'),
        (('time_budget',),
         '—',
         'e.g. `30m`: plan steps from measured speed, end the LR schedule and final evaluation'
         ' inside it. It bounds training (steps, validations, final evaluation); reading and '
         'caching the data, building the model and writing the report come on top, and the '
         "final line prints the training time and the command's total time"),
        (('tta',),
         '`false`',
         'flip + translate test-time augmentation in evaluation'),
        (('freeze_backbone_epochs', 'backbone_lr_scale'),
         '`0`, `1.0`',
         'train the head alone first; lower backbone LR (the log says when the backbone is '
         'frozen and unfrozen)'),
        (('phases',),
         '`[]`',
         'list of `{epochs, augment, optimizer, lr, lr_scale, momentum, start_from: '
         "best|last}`; each phase's start is one log line (its epochs, LR, augmentation, "
         'frozen parts)'),
        (('sync_bn',),
         '`false`',
         'synchronised BatchNorm under DDP'),
        (('progress',),
         'auto',
         'progress bars (auto: on a terminal or in a Jupyter notebook)'),
        (('tensorboard', 'tracking'),
         '`true`, `tensorboard`',
         'TensorBoard curves and an HParams entry (config + result) in `tb/`; `tracking`: one '
         'of or a list of `tensorboard`, `wandb` (Weights & Biases, needs `reslab[wandb]`), '
         '`mlflow` (needs `reslab[mlflow]`; see Tracking)'),
        (('report',),
         '`true`',
         'write plots and `report.html` at the end'),
        (('ema',),
         'off',
         '`{decay: 0.999, warmup_steps: 0, every: 1, select: best}` (`true` for the defaults):'
         ' an EMA of the weights, evaluated beside them; `select` raw / ema / best'),
        (('lookahead',),
         'off',
         '`{k: 5, alpha: 0.5}` (`true` for the defaults): Lookahead around the optimizer'),
        (('grad_clip',),
         '—',
         'max total gradient norm'),
        (('accumulate',),
         '`1`',
         'micro-batches per optimizer step (batch x K)'),
        (('init',),
         '`default`',
         "`whiten`: the first conv initialised from the data's patch whitening (airbench)"),
        (('eval_every',),
         '`1`',
         'validate after every N-th epoch and the last one; `0`: only the final evaluation '
         '(saves the per-epoch passes under a time budget; refused with early stopping or a '
         'plateau schedule on a `val_` metric)'),
    ],
}


TOP_LEVEL: list[tuple[tuple[str, ...], str, str]] = [
    (("name",), "—", "run name: runs/NAME-TIME (default: SOURCE-ARCH-TIME)"),
    (("base",), "—", "another config file (relative to this one) whose keys this file overrides"),
    (("machine",), "`{}`", "per machine class (cpu-fp32, cpu-bf16, cuda), `--set`-style overrides "
                           "a new run applies once its device is known"),
]


def meaning(section: str, key: str) -> str:
    """The meaning of `section.key` (its row's), or '' for a key without a row."""
    rows = TOP_LEVEL if not section else ROWS.get(section, [])
    return next((text for keys, _, text in rows if key in keys), "")


def markdown_table(section: str) -> str:
    """README.md's table for `section` (data, model, train)."""
    rows = [[", ".join(f"`{k}`" for k in keys), default, text]
            for keys, default, text in ROWS[section]]
    return formatting.markdown_table(["key", "default", "meaning"], rows, [False] * 3)
