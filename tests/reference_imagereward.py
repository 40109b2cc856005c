"""ImageReward's publisher code (the ``image-reward`` 1.5 package, installed with ``--no-deps``:
its pins -- timm 0.6.13, fairscale 0.4.13, transformers 4.x internals -- conflict with ours)
made importable offline beside transformers 5, with every patched name listed here:

- ``transformers.modeling_utils``: ``apply_chunking_to_forward`` and ``prune_linear_layer``
  (moved to ``transformers.pytorch_utils``), ``find_pruneable_heads_and_indices`` (used only by
  ``prune_heads``, which nothing calls: raises);
- ``ImageReward.models.BLIP.med.BertModel``: ``init_weights``, ``get_head_mask`` and
  ``invert_attention_mask`` as transformers 4.x's ``PreTrainedModel`` had them;
- stub modules: ``ImageReward`` and its ``models`` packages (their ``__init__`` imports ReFL,
  accelerate, datasets and OpenAI ``clip``, none used by the score), ``fairscale``'s
  ``checkpoint_wrapper`` (only with gradient checkpointing, off here);
- ``blip_pretrain.init_tokenizer`` (hard-codes a download of ``bert-base-uncased``) and
  ``create_vit`` (hard-codes ViT-B/L widths): a local WordPiece vocabulary, a tiny ViT.

The model is then assembled as ``ImageReward.__init__`` assembles it (which hard-codes 224 px
and MLP(768)), at tiny widths, and saved as the publisher saves ``ImageReward.pt``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch

from distar.evaluation.imagereward import REWARD_MEAN, REWARD_STD
from distar.evaluation.tiny_metrics import (
    BLIP_IMAGE_SIZE,
    BLIP_POSITIONS,
    BLIP_WIDTH,
    tiny_bert_tokenizer,
    tiny_blip_configs,
)


def package_root() -> Path | None:
    """Where the installed ``ImageReward`` package lives (None: not installed), without
    importing it; also once the stubs below stand in for it."""
    loaded = sys.modules.get("ImageReward")
    if loaded is not None:
        return Path(loaded.__path__[0])
    spec = importlib.util.find_spec("ImageReward")
    return None if spec is None else Path(spec.submodule_search_locations[0])


def reference_modules():
    """(med, vit, blip_pretrain, ImageReward module) of the installed package, shimmed."""
    import transformers.modeling_utils as modeling_utils
    import transformers.pytorch_utils as pytorch_utils

    def unused(*args, **kwargs):
        raise NotImplementedError("prune_heads is not supported by this shim")

    modeling_utils.apply_chunking_to_forward = pytorch_utils.apply_chunking_to_forward
    modeling_utils.prune_linear_layer = pytorch_utils.prune_linear_layer
    modeling_utils.find_pruneable_heads_and_indices = unused
    root = package_root()
    for name, path in (
        ("ImageReward", root),
        ("ImageReward.models", root / "models"),
        ("ImageReward.models.BLIP", root / "models" / "BLIP"),
    ):
        package = types.ModuleType(name)
        package.__path__ = [str(path)]
        sys.modules.setdefault(name, package)
    for name in ("fairscale", "fairscale.nn", "fairscale.nn.checkpoint"):
        sys.modules.setdefault(name, types.ModuleType(name))
    wrapper = types.ModuleType("fairscale.nn.checkpoint.checkpoint_activations")
    wrapper.checkpoint_wrapper = lambda module, **kwargs: module
    sys.modules.setdefault(wrapper.__name__, wrapper)
    med = importlib.import_module("ImageReward.models.BLIP.med")
    vit = importlib.import_module("ImageReward.models.BLIP.vit")
    pretrain = importlib.import_module("ImageReward.models.BLIP.blip_pretrain")
    model = importlib.import_module("ImageReward.ImageReward")
    med.BertModel.init_weights = lambda self: self.apply(self._init_weights)
    med.BertModel.get_head_mask = lambda self, mask, n, chunked=False: [None] * n
    med.BertModel.invert_attention_mask = invert_attention_mask
    return med, vit, pretrain, model


def invert_attention_mask(self, mask: torch.Tensor) -> torch.Tensor:
    extended = mask[:, None, :, :] if mask.dim() == 3 else mask[:, None, None, :]
    extended = extended.to(dtype=self.dtype)
    return (1.0 - extended) * torch.finfo(self.dtype).min


def tiny_reference(directory: Path, seed: int = 0):
    """The publisher's ``ImageReward`` module at tiny widths, its ``ImageReward.pt`` written as
    the publisher writes it (``torch.save(model.state_dict())``), and distar's configs for the
    same shapes: (model, checkpoint, tokenizer directory, configs directory)."""
    from distar.evaluation.imagereward import blip_tokenizer

    med, vit, pretrain, module = reference_modules()
    directory.mkdir(parents=True, exist_ok=True)
    bert = tiny_bert_tokenizer(directory / "bert")

    def local_tokenizer():
        tokenizer = blip_tokenizer(bert)
        tokenizer.enc_token_id = tokenizer.convert_tokens_to_ids("[ENC]")
        return tokenizer

    def tiny_vit(vit_name, image_size, *args):
        net = vit.VisionTransformer(
            img_size=image_size,
            patch_size=16,
            embed_dim=BLIP_WIDTH,
            depth=1,
            num_heads=2,
            mlp_ratio=2,
        )
        return net, BLIP_WIDTH

    pretrain.init_tokenizer, pretrain.create_vit = local_tokenizer, tiny_vit
    vocab = len(local_tokenizer())
    med_config = {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": BLIP_WIDTH,
        "initializer_range": 0.02,
        "intermediate_size": 2 * BLIP_WIDTH,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": BLIP_POSITIONS,
        "model_type": "bert",
        "num_attention_heads": 2,
        "num_hidden_layers": 1,
        "pad_token_id": 0,
        "type_vocab_size": 2,
        "vocab_size": vocab,
        "encoder_width": BLIP_WIDTH,
        "add_cross_attention": True,
    }
    (directory / "med_config.json").write_text(json.dumps(med_config))
    torch.manual_seed(seed)
    model = module.ImageReward.__new__(module.ImageReward)
    torch.nn.Module.__init__(model)
    model.device = "cpu"
    model.blip = pretrain.BLIP_Pretrain(
        image_size=BLIP_IMAGE_SIZE, vit="large", med_config=str(directory / "med_config.json")
    )
    model.preprocess = module._transform(BLIP_IMAGE_SIZE)
    model.mlp = module.MLP(BLIP_WIDTH)
    for p in model.mlp.parameters():  # its own init scores every pair ~-0.163: spread it
        torch.nn.init.normal_(p, std=0.3)
    model.mean, model.std = REWARD_MEAN, REWARD_STD
    model.eval()
    torch.save(model.state_dict(), directory / "ImageReward.pt")
    configs = tiny_blip_configs(directory / "configs", vocab)  # distar's, of the same shapes
    return model, directory / "ImageReward.pt", bert, configs
