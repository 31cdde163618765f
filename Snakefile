# vitcompress: compress Vision Transformers and measure what each compression buys and costs.
#
#   snakemake --cores 4 --resources gpu=1                       # demo profile (offline, CPU is fine)
#   snakemake --cores 4 --resources gpu=1 --config profile=paper # the study's setting (CIFAR, ViT-B/16)
#   snakemake --cores 4 bench_arch --config profile=paper       # time and size each row's architecture only
#   snakemake --cores 4 attention_scaling                       # exact vs Nystrom attention over sequence length
#   snakemake --report reports/report.html                      # after a run: one self-contained HTML report
#
# params.yaml is the single source of truth; it is validated before any job starts.
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("8.0")
sys.path.insert(0, workflow.basedir)

from vitcompress.config import ConfigError, read_params

try:  # Snakemake's own reading would only say "not valid JSON or YAML": name the line and column
    read_params("params.yaml")
except ConfigError as _err:
    raise WorkflowError(str(_err)) from None


configfile: "params.yaml"


report: "rules/captions/workflow.rst"


include: "rules/common.smk"


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    seed="(@seed[0-9]+)?",  # "" for the profile's seed, "@seed<k>" for the others (`seeds`)
    chain="[A-Za-z0-9_.+-]+",
    step="[A-Za-z0-9_.-]+",
    prefix="[A-Za-z0-9_.+-]+",
    row="[A-Za-z0-9_.+-]+",


include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/compress.smk"
include: "rules/measure.smk"
include: "rules/report.smk"


rule all:
    input:
        get_final_output(),
    default_target: True
