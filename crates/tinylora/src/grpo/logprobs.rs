//! Log-probabilities of sampled completions under the model: what the GRPO objective, the
//! reference (KL) pass and SFT's likelihood are computed from.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

use crate::model::{CausalLm, Mixes};

/// Log-probabilities of each completion token under `model` with the adapter at `mixes`, its
/// logits divided by `temperature` (as the tokens were sampled; differentiable in the `v`
/// the mixes were made from), with the mask of real tokens.
///
/// Rows are laid out as `[left padding, prompt, completion, right padding]`: prompts aligned
/// on the right, completions on the left. The prompts run first, each distinct prompt once
/// (the samples of a group share theirs), then the completions continue the cache.
///
/// # Shapes
/// - output: `([batch, max_completion], [batch, max_completion])` log-probs and 0/1 mask
pub fn completion_logprobs(
    model: &CausalLm,
    mixes: &Mixes,
    prompts: &[Vec<u32>],
    completions: &[Vec<u32>],
    temperature: f32,
) -> (Tensor<2>, Tensor<2>) {
    let batch = prompts.len();
    let p_len = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let c_len = completions.iter().map(Vec::len).max().unwrap_or(0).max(1);
    // Inputs: the left-padded prompts, then the completions but their last token (nothing
    // follows it to predict), right-padded.
    let mut prompt_rows = Vec::with_capacity(batch);
    let mut completion_rows = Vec::with_capacity(batch);
    let mut targets = Vec::with_capacity(batch * c_len);
    let mut mask = Vec::with_capacity(batch * c_len);
    for (prompt, completion) in prompts.iter().zip(completions) {
        let filler = prompt[0];
        let mut row = vec![filler; p_len - prompt.len()];
        row.extend_from_slice(prompt);
        prompt_rows.push(row);
        let mut row = Vec::with_capacity(c_len - 1);
        for j in 0..c_len {
            let token = completion.get(j).copied();
            if j + 1 < c_len {
                row.push(token.unwrap_or(filler));
            }
            targets.push(token.unwrap_or(0) as i32);
            mask.push(if token.is_some() { 1.0f32 } else { 0.0 });
        }
        completion_rows.push(row);
    }
    let pads = prompts.iter().map(|p| p_len - p.len()).collect();
    let mut cache = model.new_cache(pads);
    // Logits at positions p_len − 1 .. p_len + c_len − 1 predict the completion tokens: the
    // last prompt position, run once per distinct prompt (a group's samples share it), then
    // the completion inputs.
    let (prompt_hidden, shared) = model.hidden_states_distinct(&prompt_rows, &mut cache, mixes);
    let [distinct, _, h] = prompt_hidden.dims();
    let last_prompt = shared.expand(prompt_hidden.slice([0..distinct, p_len - 1..p_len, 0..h]));
    let hidden = if c_len > 1 {
        let completion_hidden = model.hidden_states(&completion_rows, &mut cache, mixes);
        Tensor::cat(vec![last_prompt, completion_hidden], 1)
    } else {
        last_prompt
    };
    let logits = model.logits(hidden);
    let logits = if temperature == 1.0 {
        logits
    } else {
        logits.div_scalar(f64::from(temperature))
    };
    let logp = log_softmax(logits, 2);
    let device = &model.device;
    let index = Tensor::<3, Int>::from_data(TensorData::new(targets, [batch, c_len, 1]), device);
    let picked = logp.gather(2, index).reshape([batch, c_len]);
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [batch, c_len]), device);
    (picked * mask.clone(), mask)
}
