# Later steps of a chain: a compression method applied to the artifact of the chain's prefix.
# `results/<profile>/<dataset>/a+b/model.pt` is step b run on `.../a/model.pt`, so every row that
# shares a prefix reuses its artifact (trained once).


rule compress:
    input:
        unpack(step_inputs),
    output:
        model=f"{RESULTS}/{{dataset}}/{{prefix}}+{{step}}/model.pt",
        accuracy=f"{RESULTS}/{{dataset}}/{{prefix}}+{{step}}/accuracy.json",
        resources=f"{LOGS}/{{dataset}}/{{prefix}}+{{step}}/step.resources.tsv",  # wall time and peak memory
    params:
        **STEP_PARAMS,
    wildcard_constraints:
        step=step_alternation("pytorch"),
    log:
        f"{LOGS}/{{dataset}}/{{prefix}}+{{step}}/step.log",
    priority: step_priority
    threads: STEP_SLOTS
    resources:
        gpu=GPU_JOB,  # an export's check runs the PyTorch model on the profile's device too
    run:
        job(run_step, log[0], output.resources, **step_kwargs(input, output, params, wildcards))


# Steps whose artifact ONNX Runtime runs (an `onnx` export, ORT int8 quantization): the same job, writing
# `model.onnx`, the file a device loads. Its accuracy and speed are ONNX Runtime's.
use rule compress as deploy with:
    output:
        model=f"{RESULTS}/{{dataset}}/{{prefix}}+{{step}}/model.onnx",
        accuracy=f"{RESULTS}/{{dataset}}/{{prefix}}+{{step}}/accuracy.json",
        resources=f"{LOGS}/{{dataset}}/{{prefix}}+{{step}}/step.resources.tsv",
    wildcard_constraints:
        step=step_alternation("onnxruntime"),
