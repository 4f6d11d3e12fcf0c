//! The supervised baseline on a tiny model: the NLL gradient with respect to `v` equals finite
//! differences, micro-batches add up, and AdamW on 13 floats lowers the loss of fixed targets.

use std::path::Path;

use burn::tensor::Device;
use tinylora::adapter::TinyLora;
use tinylora::adapter::config::TinyLoraConfig;
use tinylora::checkpoint::Checkpoint;
use tinylora::micro_batch::MicroBatch;
use tinylora::model::CausalLm;
use tinylora::numerics::{
    central_difference, check_derivative, gradient_tolerance, logprob_tolerance,
};
use tinylora::optim::{AdamW, AdamWConfig, global_norm};
use tinylora::readback::block_on;
use tinylora::sft::{SftUpdateConfig, sft_loss_and_gradients, sft_update};

fn setup() -> (CausalLm, TinyLora) {
    let device = Device::flex().autodiff();
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2/untied_bf16_tf5");
    let mut model = Checkpoint::open(&dir).unwrap().load(&device).unwrap();
    let adapter = block_on(TinyLora::init(&mut model, TinyLoraConfig::default())).unwrap();
    adapter.attach(&mut model).unwrap();
    (model, adapter)
}

fn data() -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let prompts = vec![vec![3, 1, 4], vec![9, 2], vec![6, 5, 3, 5]];
    let targets = vec![vec![20, 21, 22, 23], vec![20, 21], vec![20, 21, 22]];
    (prompts, targets)
}

#[test]
fn gradient_equals_finite_differences_and_micro_batches_add_up() {
    let (model, mut adapter) = setup();
    adapter.v = vec![(0..13).map(|i| 0.2 * ((i as f32) * 0.9).cos()).collect()];
    let (prompts, targets) = data();
    let loss_and_gradients = |adapter: &TinyLora, rows: usize| {
        block_on(sft_loss_and_gradients(
            &model,
            adapter,
            &prompts,
            &targets,
            MicroBatch::Rows(rows),
        ))
        .unwrap()
    };
    let (loss, grads) = loss_and_gradients(&adapter, 8);
    let (split_loss, split_grads) = loss_and_gradients(&adapter, 1);
    // The two split the same sums differently: within the summation-order bound, while a
    // micro-batch weighted wrongly would be off by a fraction of the whole.
    let positions = 4 + 4;
    let loss_tol = logprob_tolerance(&model.config, positions, loss.abs());
    assert!(
        (loss - split_loss).abs() <= loss_tol,
        "{loss} vs {split_loss}"
    );
    let grad_norm = global_norm(&grads[0]);
    let tol = gradient_tolerance(&model.config, positions, grad_norm);
    println!("gradient norm {grad_norm:.3e}, tolerance {tol:.3e}");
    for (a, b) in grads[0].iter().zip(&split_grads[0]) {
        assert!(
            f64::from((a - b).abs()) <= tol,
            "{a} vs {b} (tolerance {tol:e})"
        );
    }
    // Finite differences: within three times their own error estimate (truncation and this
    // machine's rounding), plus the analytic gradient's own summation-order bound.
    for k in [1, 6, 11] {
        let saved = adapter.v[0][k];
        let difference = central_difference(
            |delta| {
                adapter.v[0][k] = saved + delta as f32;
                let (l, _) = loss_and_gradients(&adapter, 8);
                adapter.v[0][k] = saved;
                l
            },
            2e-3,
        );
        check_derivative(f64::from(grads[0][k]), difference, tol)
            .unwrap_or_else(|e| panic!("v[{k}]: {e}"));
    }
}

#[test]
fn updates_lower_the_loss_of_the_targets() {
    let (model, mut adapter) = setup();
    let (prompts, targets) = data();
    let mut optimizer = AdamW::new(AdamWConfig::default(), &adapter.v);
    let config = SftUpdateConfig {
        micro_batch: MicroBatch::Rows(2),
        lr: 0.05,
        max_grad_norm: 1.0,
    };
    let mut losses = Vec::new();
    for _ in 0..25 {
        let stats = block_on(sft_update(
            &model,
            &mut adapter,
            &mut optimizer,
            &prompts,
            &targets,
            &config,
        ))
        .unwrap();
        assert_eq!(stats.tokens, 9);
        losses.push(stats.loss);
    }
    println!("SFT loss {:.4} -> {:.4}", losses[0], losses[24]);
    assert!(losses[24] < losses[0] - 0.05, "{losses:?}");
}
