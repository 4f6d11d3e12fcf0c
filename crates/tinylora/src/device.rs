//! Backend selection at run time: burn's `flex` CPU backend or wgpu (Vulkan, Metal, DX12,
//! WebGPU in the browser).

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

use crate::{Error, Result};

/// The compute backends a user can choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// burn's pure-Rust `flex` CPU backend (native only).
    Cpu,
    /// wgpu: Vulkan/Metal/DX12 natively, WebGPU in the browser.
    Wgpu,
}

impl BackendKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "wgpu",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Ok(BackendKind::Cpu),
            "wgpu" | "gpu" | "vulkan" | "webgpu" => Ok(BackendKind::Wgpu),
            _ => Err(Error::UnknownBackend(s.to_string())),
        }
    }
}

/// Starts the chosen backend on a native target and returns its device.
///
/// wgpu is initialised explicitly so that a machine without a usable adapter gets an error
/// rather than a panic at the first tensor operation.
#[cfg(feature = "native")]
pub fn init(kind: BackendKind) -> Result<Device> {
    match kind {
        BackendKind::Cpu => Ok(Device::flex()),
        BackendKind::Wgpu => {
            use std::sync::OnceLock;
            // The runtime can be initialised once per process; later calls reuse the device.
            static WGPU: OnceLock<std::result::Result<Device, String>> = OnceLock::new();
            WGPU.get_or_init(|| {
                Device::wgpu_options()
                    .init()
                    .map_err(|e| format!("{e}. On Linux without a GPU, install Mesa's lavapipe: apt-get install mesa-vulkan-drivers"))
            })
            .clone()
            .map_err(|reason| Error::BackendInit {
                backend: "wgpu",
                reason,
            })
        }
    }
}

/// Starts wgpu on the browser's WebGPU and returns its device.
#[cfg(feature = "webgpu")]
pub async fn init_webgpu() -> Result<Device> {
    use burn::tensor::wgpu::WgpuBackend;
    Device::wgpu_options()
        .graphics_api(WgpuBackend::WebGpu)
        .init_async()
        .await
        .map_err(|e| Error::BackendInit {
            backend: "webgpu",
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_round_trip() {
        for kind in [BackendKind::Cpu, BackendKind::Wgpu] {
            assert_eq!(kind.name().parse::<BackendKind>().unwrap(), kind);
        }
        assert!(matches!(
            "tpu".parse::<BackendKind>(),
            Err(Error::UnknownBackend(name)) if name == "tpu"
        ));
    }
}
