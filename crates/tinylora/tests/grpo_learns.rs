//! A short fixed-seed GRPO run on a tiny synthetic task: with 13 trainable floats (u = 13, fully
//! tied), the probability that the first answer token falls in a target set rises when that is
//! rewarded and falls when its complement is rewarded. The tiny random model's flat output
//! distribution bounds how far it can move, so the check is direction and a clear margin.

use std::path::Path;

use burn::tensor::Device;
use burn::tensor::activation::softmax;
use tinylora::adapter::TinyLora;
use tinylora::adapter::config::TinyLoraConfig;
use tinylora::checkpoint::Checkpoint;
use tinylora::generate::GenerateConfig;
use tinylora::grpo::pipeline::{GrpoStepConfig, Score, grpo_step};
use tinylora::model::{CausalLm, Mixes};
use tinylora::optim::{AdamW, AdamWConfig};
use tinylora::readback::{block_on, to_vec_f32};
use tinylora::sampling::SamplingConfig;

/// Exact expected reward under `mixes`: the mean probability that the first token is below 256.
fn target_mass(model: &CausalLm, mixes: &Mixes, prompts: &[Vec<u32>]) -> f64 {
    let total: f64 = prompts
        .iter()
        .map(|p| {
            let mut cache = model.new_cache(vec![0]);
            let logits = model.forward_last(std::slice::from_ref(p), &mut cache, mixes);
            let probs = block_on(to_vec_f32(softmax(logits, 1))).unwrap();
            probs[..256].iter().map(|&x| f64::from(x)).sum::<f64>()
        })
        .sum();
    total / prompts.len() as f64
}

/// Trains 60 steps rewarding `first token < 256` (or its complement); returns (before, after).
fn train(reward_low: bool) -> (f64, f64) {
    let device = Device::flex().autodiff();
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2/untied_bf16_tf5");
    let mut model = Checkpoint::open(&dir).unwrap().load(&device).unwrap();
    let mut adapter = block_on(TinyLora::init(&mut model, TinyLoraConfig::default())).unwrap();
    assert_eq!(adapter.trainable_count(), 13);
    adapter.attach(&mut model).unwrap();
    let prompts: Vec<Vec<u32>> = (0..8u32)
        .map(|i| vec![10 + i, 100 + 7 * i, 300 - i])
        .collect();
    let before = target_mass(&model, &adapter.current_mixes(&model).unwrap(), &prompts);
    let mut optimizer = AdamW::new(AdamWConfig::default(), &adapter.v);
    let config = GrpoStepConfig {
        group_size: 8,
        lr: 0.02,
        ..GrpoStepConfig::default()
    };
    for step in 0..60u64 {
        let generation = GenerateConfig {
            max_new_tokens: 1,
            sampling: SamplingConfig {
                temperature: Some(1.0),
                top_k: None,
                top_p: None,
            },
            seed: 1000 * step,
            stop_tokens: Vec::new(),
        };
        let score = |_: usize, c: &[u32]| {
            Ok(Score {
                reward: f32::from(u8::from((c[0] < 256) == reward_low)),
                correct: false,
            })
        };
        let stats = block_on(grpo_step(
            &model,
            &mut adapter,
            &mut optimizer,
            &prompts,
            score,
            &generation,
            &config,
        ))
        .unwrap();
        assert!(stats.loss.is_finite() && stats.grad_norm > 0.0);
    }
    let after = target_mass(&model, &adapter.current_mixes(&model).unwrap(), &prompts);
    (before, after)
}

#[test]
fn the_reward_steers_thirteen_parameters() {
    let (before, up) = train(true);
    let (_, down) = train(false);
    println!("P(first token < 256): {before:.3}; rewarded {up:.3}; complement rewarded {down:.3}");
    // Measured here: 0.509 → 0.517 rewarded (near this random model's ceiling in that
    // direction), 0.509 → 0.448 with the complement rewarded.
    assert!(up >= before + 0.005, "{before:.3} -> {up:.3}");
    assert!(down <= before - 0.03, "{before:.3} -> {down:.3}");
    assert!(
        up - down >= 0.05,
        "rewarded {up:.3} vs complement {down:.3}"
    );
}
