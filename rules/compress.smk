# Later steps of a chain: a compression method applied to the artifact of the chain's prefix.
# `results/<profile>/<dataset>/a+b/model.pt` is step b run on `.../a/model.pt`, so every row that
# shares a prefix reuses its artifact (trained once). One rule per runtime, by the files its artifacts
# are: `compress` for PyTorch steps (model.pt); `deploy_<runtime>` for the steps whose artifact another
# runtime runs (an `onnx` export and ORT int8: model.onnx; `ov` and NNCF int8: model.xml + model.bin),
# the files a device loads. Their accuracy and speed are that runtime's.

for _runtime in RUNTIMES:

    rule:
        name:
            "compress" if _runtime == "pytorch" else f"deploy_{_runtime}"
        input:
            unpack(step_inputs),
        output:
            **W.step_outputs(_runtime),
        params:
            **STEP_PARAMS,
        wildcard_constraints:
            step=W.step_alternation(_runtime),
        log:
            f"{W.logs}/{{dataset}}{{seed}}/{{prefix}}+{{step}}/step.log",
        priority: step_priority
        threads: W.step_slots
        resources:
            gpu=W.gpu_job,  # a conversion's check runs the PyTorch model on the profile's device too
        run:
            job(run_step, log[0], output.resources, **step_kwargs(input, output, params, wildcards))
