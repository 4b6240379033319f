#!/usr/bin/env bash
# The demo, end to end on the embedded default, in numbered stages (icefall style):
#   bash scripts/run_demo.sh                  # everything (make demo)
#   STAGE=4 STOP_STAGE=6 bash scripts/run_demo.sh
# A stage whose output exists is skipped (one line says so), so an interrupted demo resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

stage=${STAGE:-1}
stop_stage=${STOP_STAGE:-10}
base_model=models/demo_base.nemo
out=exp/demo
mkdir -p "$out"
# todo <stage> [<output>]: whether to run the stage: it is in STAGE..STOP_STAGE and <output> does not exist yet.
todo() {
  [[ $stage -le $1 && $1 -le $stop_stage ]] || return 1
  if [[ -n ${2:-} && -e $2 ]]; then
    echo "=== stage $1: skipped, already done ($2 exists)"
    return 1
  fi
}
log() { echo -e "\n=== stage $1: $2 ($(date +%T))"; }
prepared=data/prepared
# The short dev sets, and the 20-minute continuous streams with the same utterances one by one (data_prep.long_form)
dev_sets="{target_dev: $prepared/demo_target/dev/cuts.jsonl.gz, general_dev: $prepared/demo_general/dev/cuts.jsonl.gz,\
 target_20min: $prepared/demo_target/dev_20min/cuts.jsonl.gz,\
 target_20min_one_by_one: $prepared/demo_target/dev_20min/segments.jsonl.gz,\
 general_20min: $prepared/demo_general/dev_20min/cuts.jsonl.gz,\
 general_20min_one_by_one: $prepared/demo_general/dev_20min/segments.jsonl.gz}"

if todo 1 data/demo_corpus/target/dev.jsonl; then
  log 1 "synthesise the demo corpus (eSpeak NG, general + aviation target domain)"
  python -m data_prep.demo_corpus
fi

if todo 2 data/prepared/blends/demo_replay/input_cfg.yaml; then
  log 2 "prepare Granary-style manifests into Lhotse Shar; blend target + 20 % general replay"
  python -m data_prep corpus=demo_general
  python -m data_prep corpus=demo_target
  python -m data_prep.blend blend=demo_replay
fi

if todo 3 $base_model; then
  # Made once: the base model is committed (docs/demo.md, "The base model", says which checkpoints).
  log 3 "pre-train the base model on the general domain, then on continuous speech in two runs ($base_model is missing)"
  python -m data_prep.train_tokenizer
  python -m recipes.finetune experiment=demo_pretrain
  python -m recipes.export run_dir=exp/demo_pretrain checkpoint="${BASE_CHECKPOINT:-step002484}" \
      nemo.output=exp/demo_pretrain/isolated.nemo nemo.fp16_weights=true
  python -m recipes.finetune experiment=demo_continuous
  python -m recipes.export run_dir=exp/demo_continuous checkpoint=last \
      nemo.output=exp/demo_continuous/half_joined.nemo nemo.fp16_weights=true
  # then every batch joined: a 20-minute stream from 1.3-1.6x its utterances one by one to 0.9-1.1x (docs/demo.md)
  python -m recipes.finetune experiment=demo_continuous run_name=demo_continuous_all \
      model.init_from=exp/demo_continuous/half_joined.nemo data.continuous.share=1.0 trainer.max_steps=600
  python -m recipes.export run_dir=exp/demo_continuous_all checkpoint=last nemo.output=$base_model nemo.fp16_weights=true
fi

if todo 4 $out/base_wer.json; then
  log 4 "streaming WER of the base model, every lookahead"
  python -m recipes.evaluate model=$base_model data="$dev_sets" output=$out/base_wer.json
fi

# finished.json appears only when training reached max_steps: an interrupted fine-tune is resumed, not exported.
if todo 5 exp/demo_finetune/finished.json; then
  log 5 "fine-tune on the target domain, re-weighted to 75 % general replay (streaming WER after every checkpoint; resumes an interrupted run)"
  python -m recipes.finetune experiment=demo_finetune
fi

if todo 6 exp/demo_finetune/onnx/parity.json; then
  log 6 "export: average the last 2 checkpoints (streamed, reported); last.ckpt to a checked .nemo and to ONNX"
  python -m recipes.export run_dir=exp/demo_finetune average.select=last average.num=2 \
      onnx.output_dir=exp/demo_finetune/onnx
fi

if todo 7 $out/finetuned_wer.json; then
  log 7 "streaming WER of the exported fine-tuned model"
  python -m recipes.evaluate model=exp/demo_finetune/model.nemo data="$dev_sets" output=$out/finetuned_wer.json
fi

if todo 8; then
  log 8 "base vs fine-tuned"
  python -m recipes.evaluate.compare base=$out/base_wer.json fine-tuned=$out/finetuned_wer.json | tee $out/RESULTS.md
fi

if todo 9 $out/interpolation/interpolation.md; then
  log 9 "WiSE-FT: base <-> fine-tuned weight interpolation, target vs general trade-off, chosen alpha as .nemo"
  # Three alphas on 60 utterances per set keep this stage near a minute; the full sweep is conf/interpolate.yaml's.
  python -m recipes.interpolate base=$base_model finetuned=exp/demo_finetune/checkpoints/last.ckpt \
      'alphas=[0.3,0.5,0.7]' max_utterances=60 output_dir=$out/interpolation export=exp/demo_finetune/model_wise.nemo
fi

if todo 10; then
  log 10 "results card of the run (exp/demo_finetune/RESULTS.md)"
  python -m recipes.export.card run_dir=exp/demo_finetune base_report=$out/base_wer.json \
      exported_report=$out/finetuned_wer.json 'long_form_sets=[target_20min,general_20min]' \
      'commands=["python -m data_prep.demo_corpus","python -m data_prep corpus=demo_general",'\
'"python -m data_prep corpus=demo_target","python -m data_prep.blend blend=demo_replay"]'
fi
