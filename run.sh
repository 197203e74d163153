#!/bin/sh
# Usage: sh run.sh CONFIG [main.py arguments ...]
#   sh run.sh configs/cdnv2_exp_0.json
#   sh run.sh configs/cdnv2_exp_0.json --set max_epoch=1 data_root=/data/cifar
#   sh run.sh configs/cdnv2_exp_0.json --mode validate --checkpoint experiments/cdnv2_exp_0/checkpoints/best.pth
if [ $# -lt 1 ]; then
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
# main.py runs training on tcmalloc where the system has it, else pip's mimalloc (utils/allocator.py;
# ALLOCATOR=glibc opts out)
exec "${PYTHON:-python}" "$(dirname "$0")/main.py" "$@"
