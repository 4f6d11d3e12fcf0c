//! Training and rollouts share one forward: the log-probs recomputed for a batch of sampled
//! completions equal those recorded while sampling (at the sampling temperature), so GRPO starts
//! on-policy.

use std::path::Path;

use burn::tensor::Device;
use tinylora::checkpoint::Checkpoint;
use tinylora::generate::{GenerateConfig, generate, generate_until};
use tinylora::grpo::completion_logprobs;
use tinylora::model::Mixes;
use tinylora::numerics::logprob_tolerance;
use tinylora::readback::{block_on, to_vec_f32};
use tinylora::sampling::SamplingConfig;

#[test]
fn recomputed_logprobs_equal_sampling_logprobs() {
    for temperature in [1.0, 0.7] {
        check_at(temperature);
    }
}

fn check_at(temperature: f32) {
    let device = Device::flex();
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2/untied_bf16_tf5");
    let model = Checkpoint::open(&dir).unwrap().load(&device).unwrap();
    // Repeated prompts (as a GRPO group's) share their prefill in both passes.
    let prompts = vec![
        vec![3, 1, 4, 1, 5],
        vec![9, 2],
        vec![3, 1, 4, 1, 5],
        vec![6, 5, 3, 5, 8, 9, 7],
        vec![9, 2],
        vec![3, 1, 4, 1, 5],
    ];
    let config = GenerateConfig {
        max_new_tokens: 9,
        sampling: SamplingConfig {
            temperature: Some(temperature),
            top_k: None,
            top_p: None,
        },
        seed: 11,
        stop_tokens: vec![2, 7, 13],
    };
    let base = Mixes::none();
    let rollouts = block_on(generate(&model, &base, &prompts, &config, |_, _| {})).unwrap();
    let completions: Vec<Vec<u32>> = rollouts.iter().map(|g| g.tokens.clone()).collect();
    let (logp, mask) = completion_logprobs(&model, &base, &prompts, &completions, temperature);
    let width = completions.iter().map(Vec::len).max().unwrap();
    let logp = block_on(to_vec_f32(logp)).unwrap();
    let mask = block_on(to_vec_f32(mask)).unwrap();
    // Incremental decoding and one batched pass sum in different orders: within the bound for a
    // log-prob of the size recorded (plus ln(vocab) for the log-sum-exp), scaled by 1/T.
    let positions = 7 + width;
    let ln_vocab = (model.config.vocab_size as f64).ln();
    for (b, rollout) in rollouts.iter().enumerate() {
        for j in 0..width {
            let recorded = rollout.logprobs.get(j);
            assert_eq!(mask[b * width + j], f32::from(u8::from(recorded.is_some())));
            if let Some(&recorded) = recorded {
                let recomputed = logp[b * width + j];
                let magnitude = (f64::from(recorded.abs()) + ln_vocab) / f64::from(temperature);
                let tol = logprob_tolerance(&model.config, positions, magnitude);
                assert!(
                    f64::from((recomputed - recorded).abs()) <= tol,
                    "T={temperature} row {b} token {j}: {recomputed} vs {recorded} (tolerance {tol:e})"
                );
            }
        }
    }
}

#[test]
fn a_cancelled_generation_keeps_the_tokens_so_far() {
    let device = Device::flex();
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2/untied_bf16_tf5");
    let model = Checkpoint::open(&dir).unwrap().load(&device).unwrap();
    let prompts = vec![vec![3, 1, 4, 1, 5]];
    let config = GenerateConfig {
        max_new_tokens: 12,
        sampling: SamplingConfig {
            temperature: None,
            top_k: None,
            top_p: None,
        },
        seed: 0,
        stop_tokens: vec![],
    };
    let base = Mixes::none();
    let full = block_on(generate(&model, &base, &prompts, &config, |_, _| {})).unwrap();
    assert_eq!(full[0].tokens.len(), 12);
    let mut seen = 0;
    let cut = std::cell::Cell::new(0);
    let partial = block_on(generate_until(
        &model,
        &base,
        &prompts,
        &config,
        |_, _| {
            seen += 1;
            cut.set(seen);
        },
        || cut.get() >= 4,
    ))
    .unwrap();
    assert_eq!(partial[0].tokens, full[0].tokens[..4]);
    assert!(!partial[0].stopped);
}
