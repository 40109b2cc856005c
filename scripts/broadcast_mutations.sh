#!/usr/bin/env bash
# The mutation checks of the start-up broadcast (tests/test_distributed.py): each block below
# should end in "failed". ~1 min.
#   bash scripts/broadcast_mutations.sh
set -u
source "$(dirname "$0")/mutation_lib.sh"
T="tests/test_distributed.py"
D=distar/runtime/distributed.py
baseline "$T"  # should end in "passed"
run unbucketed $D "        for bucket in tensor_buckets(tensors, bucket_bytes):
            if len(bucket) == 1:" "        for bucket in [[t] for t in tensors]:
            if len(bucket) == 1:" "$T -k broadcast"
run sent-twice $D "            if id(t) not in seen:
                seen.add(id(t))" "            if True:" "$T -k meta"
run trainer-broadcasts-again distar/loop/trainer.py "        self.rank = rank()
" "        self.rank = rank()
        from distar.runtime.distributed import broadcast_tensors
        broadcast_tensors(list(self.world.generator.parameters()))
" "$T -k trainer_starts"
run not-received $D "                t.copy_(flat[offset : offset + t.numel()].view_as(t))" "                pass" "$T -k meta"
