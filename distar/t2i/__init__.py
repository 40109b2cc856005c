"""Text-to-image building blocks any diffusers-based world is made of, outside every world
package so that a new text world (PixArt, FLUX, ...) imports them instead of reaching into
``distar.worlds.sd``: ``edm`` (the EDM view of DDPM UNets and DMD2's one-step map), ``text``
(prompt conditions and the text encoders that make them), ``parts`` (checked loading of local
diffusers folders), ``lora`` (a LoRA assistant sharing the reference's UNet). Prompt files are
:mod:`distar.data.prompts`; the differentiable PickScore reward is
:mod:`distar.rewards.pickscore`."""
