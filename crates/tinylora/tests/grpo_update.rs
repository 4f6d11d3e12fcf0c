//! The GRPO update on a tiny model: micro-batches add up to the mini-batch, and the gradient of
//! the full loss (policy term + β·k3 KL) with respect to `v` equals central finite
//! differences of the loss.

use std::path::Path;

use burn::tensor::Device;
use tinylora::adapter::TinyLora;
use tinylora::adapter::config::TinyLoraConfig;
use tinylora::checkpoint::Checkpoint;
use tinylora::generate::GenerateConfig;
use tinylora::grpo::{Clip, LossType};
use tinylora::grpo_step::{
    GrpoStepConfig, Rollouts, loss_and_gradients, reference_logprobs, rollout,
};
use tinylora::model::Qwen2ForCausalLM;
use tinylora::readback::block_on;
use tinylora::sampling::SamplingConfig;

/// A tiny model with a fully tied u = 13 adapter whose `v` is not zero, and scored rollouts
/// sampled at `v0`, with reference log-probs, evaluated at a moved `v` so ratios differ from 1.
fn setup() -> (Qwen2ForCausalLM, TinyLora, Rollouts) {
    let device = Device::flex().autodiff();
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2/untied_bf16_tf5");
    let mut model = Checkpoint::open(&dir).unwrap().load(&device).unwrap();
    let mut adapter = block_on(TinyLora::init(&mut model, TinyLoraConfig::default())).unwrap();
    adapter.attach(&mut model).unwrap();
    adapter.v = vec![(0..13).map(|i| 0.3 * ((i as f32) * 0.7).sin()).collect()];
    adapter.set_v(&mut model, &adapter.v_tensors(&device));
    let prompts: Vec<Vec<u32>> = (0..4u32).map(|i| vec![5 + i, 40 + 3 * i, 7]).collect();
    let generation = GenerateConfig {
        max_new_tokens: 5,
        sampling: SamplingConfig {
            temperature: Some(0.9),
            top_k: None,
            top_p: None,
        },
        seed: 3,
        stop_tokens: vec![11, 12, 13],
    };
    let config = GrpoStepConfig::default();
    let reward = |_: usize, c: &[u32]| f32::from(u8::from(c[0].is_multiple_of(2)));
    let mut rollouts = block_on(rollout(
        &mut model,
        &adapter,
        &prompts,
        reward,
        &generation,
        &config,
    ))
    .unwrap();
    assert!(
        rollouts.advantages.iter().any(|&a| a != 0.0),
        "no signal in {:?}",
        rollouts.rewards
    );
    rollouts.ref_logprobs =
        Some(block_on(reference_logprobs(&mut model, &adapter, &rollouts, 3)).unwrap());
    for (i, x) in adapter.v[0].iter_mut().enumerate() {
        *x += 0.15 * ((i as f32) * 1.3).cos();
    }
    adapter.set_v(&mut model, &adapter.v_tensors(&device));
    (model, adapter, rollouts)
}

fn config(loss_type: LossType, micro_batch: usize) -> GrpoStepConfig {
    GrpoStepConfig {
        loss_type,
        micro_batch,
        kl_beta: 0.5,
        ..GrpoStepConfig::default()
    }
}

#[test]
fn micro_batches_add_up_to_the_mini_batch() {
    let (mut model, adapter, rollouts) = setup();
    let rows: Vec<usize> = (0..rollouts.prompts.len()).collect();
    for loss_type in [LossType::Grpo, LossType::Dapo, LossType::DrGrpo] {
        let whole = block_on(loss_and_gradients(
            &mut model,
            &adapter,
            &rollouts,
            &rows,
            &config(loss_type, usize::MAX),
        ))
        .unwrap();
        let split = block_on(loss_and_gradients(
            &mut model,
            &adapter,
            &rollouts,
            &rows,
            &config(loss_type, 3),
        ))
        .unwrap();
        assert!((whole.loss - split.loss).abs() < 1e-5, "{loss_type:?}");
        assert!((whole.kl - split.kl).abs() < 1e-6 && whole.kl > 0.0);
        assert!(whole.grads[0].iter().any(|&g| g != 0.0));
        for (a, b) in whole.grads[0].iter().zip(&split.grads[0]) {
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1e-2), "{a} vs {b}");
        }
    }
}

#[test]
fn gradient_equals_finite_differences() {
    let (mut model, mut adapter, rollouts) = setup();
    let device = model.device.clone();
    let rows: Vec<usize> = (0..rollouts.prompts.len()).collect();
    // Clip bounds out of reach, so the loss is smooth (the clipped branches are checked
    // against the formula in `grpo.rs`); the KL term stays on.
    let config = GrpoStepConfig {
        clip: Clip {
            low: 0.95,
            high: 20.0,
            dual: None,
        },
        ..config(LossType::Dapo, usize::MAX)
    };
    let at = block_on(loss_and_gradients(
        &mut model, &adapter, &rollouts, &rows, &config,
    ))
    .unwrap();
    let h = 1e-3f32;
    let mut checked = 0;
    for k in [0, 4, 9, 12] {
        let loss_at = |delta: f32, adapter: &mut TinyLora, model: &mut Qwen2ForCausalLM| {
            adapter.v[0][k] += delta;
            adapter.set_v(model, &adapter.v_tensors(&device));
            let loss = block_on(loss_and_gradients(
                model, adapter, &rollouts, &rows, &config,
            ))
            .unwrap()
            .loss;
            adapter.v[0][k] -= delta;
            loss
        };
        let plus = loss_at(h, &mut adapter, &mut model);
        let minus = loss_at(-h, &mut adapter, &mut model);
        let numeric = (plus - minus) / (2.0 * f64::from(h));
        let analytic = f64::from(at.grads[0][k]);
        println!("v[{k}]: analytic {analytic:.6}, finite differences {numeric:.6}");
        assert!(
            (numeric - analytic).abs() <= 2e-2 * analytic.abs().max(1e-2),
            "v[{k}]: {analytic} vs {numeric}"
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
}
