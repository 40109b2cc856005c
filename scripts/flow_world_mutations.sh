#!/usr/bin/env bash
# The mutation checks of tests/test_flow_worlds.py (the sd35 / flux worlds against diffusers'
# pipelines and FLUX.1-dev's CFG definition): each block below should end in "failed". ~6 min.
#   bash scripts/flow_world_mutations.sh
set -u
source "$(dirname "$0")/mutation_lib.sh"
T="-x tests/test_flow_worlds.py"
baseline "$T"  # should end in "passed"
W=distar/worlds/flow/world.py
N=distar/t2i/flow_nets.py
run sd3-time-unit $W "        timestep=t * 1000," "        timestep=t," "$T"
run flux-unpack $W "permute(0, 3, 1, 4, 2, 5)" "permute(0, 3, 2, 4, 1, 5)" "$T"
run flux-positions $W "    ids[..., 1] = torch.arange(h // 2, device=device)[:, None]" \
  "    ids[..., 1] = 0" "$T"
run flux-cfg-null $W "        return d_1, d_1 - (d_g - d_1) / (g - 1)" "        return d_1, d_g" "$T"
run flux-reference $W "        return self._reference(x, sigma, cond, guidance=torch.ones_like(sigma))" \
  "        return self._reference(x, sigma, cond)" "$T"
run flux-guidance $N "            guidance = torch.full_like(t, self.guidance)" \
  "            guidance = torch.full_like(t, 1.0)" "$T"
run generator-time $N "        t = torch.full((len(z),), self.time, device=z.device)" \
  "        t = torch.full((len(z),), 0.9 * self.time, device=z.device)" "$T"
run sd3-text-order distar/t2i/text.py "        embeds = torch.cat([clip, t5_embeds], dim=1)" \
  "        embeds = torch.cat([t5_embeds, clip], dim=1)" "$T"
run lora-reference $W "            self._reference = SharedReference(self.assistant, reference)" \
  "            self._reference = self.assistant" "$T"
