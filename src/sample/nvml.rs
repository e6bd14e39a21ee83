//! The NVML [`GpuSource`] (nvml-wrapper, which loads `libnvidia-ml.so` at run time: a machine
//! without the driver builds and runs, and GPU sampling reports why it is off).
//!
//! Cheap calls every tick (utilization, memory, temperature, power, clocks, fan, PCIe,
//! throttle reasons, ECC totals, retired pages); process lists on the slower schedule; XID
//! errors from an NVML event set polled without waiting. Not read: remapped rows (no call for
//! them in nvml-wrapper 0.13) and NVLink counters.
use super::gpu::{DeviceInfo, GpuError, GpuProcess, GpuReading, GpuSource, XidEvent};
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, RetirementCause, TemperatureSensor,
};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{EventSet, Nvml};
use std::collections::HashMap;

pub struct NvmlSource {
    /// NVML lives for the rest of the process: devices and the event set borrow it.
    nvml: Option<&'static Nvml>,
    events: Option<EventSet<'static>>,
    /// Last timestamp seen per GPU by the per-process utilization call.
    last_util_ts: HashMap<u32, u64>,
}

impl NvmlSource {
    pub fn new() -> NvmlSource {
        NvmlSource { nvml: None, events: None, last_util_ts: HashMap::new() }
    }

    fn nvml(&self) -> Result<&'static Nvml, GpuError> {
        self.nvml.ok_or_else(|| GpuError("NVML is not initialized".into()))
    }
}

impl Default for NvmlSource {
    fn default() -> Self {
        Self::new()
    }
}

fn err(what: &str, e: NvmlError) -> GpuError {
    GpuError(format!("{what}: {e}"))
}

/// A reading the GPU does not support is `None`, not an error.
fn opt<T>(r: Result<T, NvmlError>) -> Option<T> {
    r.ok()
}

impl GpuSource for NvmlSource {
    fn init(&mut self) -> Result<(String, Vec<DeviceInfo>), GpuError> {
        let nvml = match Nvml::init() {
            Ok(n) => &*Box::leak(Box::new(n)),
            Err(NvmlError::LibloadingError(e)) => {
                return Err(GpuError(format!("no NVIDIA driver (libnvidia-ml.so could not be loaded: {e})")))
            }
            Err(e) => return Err(err("NVML init failed", e)),
        };
        self.nvml = Some(nvml);
        let driver = nvml.sys_driver_version().unwrap_or_else(|_| "unknown".into());
        let count = nvml.device_count().map_err(|e| err("counting GPUs", e))?;
        let mut devices = Vec::new();
        let mut set = nvml.create_event_set().ok();
        for i in 0..count {
            let d = nvml.device_by_index(i).map_err(|e| err(&format!("GPU {i}"), e))?;
            devices.push(DeviceInfo {
                index: i,
                uuid: d.uuid().unwrap_or_default(),
                name: d.name().unwrap_or_else(|_| "unknown".into()),
            });
            // XID events where the GPU supports them; without, faults still show as ECC and
            // throttle changes.
            if let Some(s) = set.take() {
                set = match d.register_events(nvml_wrapper::bitmasks::event::EventTypes::CRITICAL_XID_ERROR, s) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::info!(gpu = i, error = %e.error, "XID events not available on this GPU");
                        nvml.create_event_set().ok()
                    }
                };
            }
        }
        self.events = set;
        Ok((format!("NVIDIA driver {driver}"), devices))
    }

    fn read(&mut self, gpu: u32) -> Result<GpuReading, GpuError> {
        let d = self.nvml()?.device_by_index(gpu).map_err(|e| err(&format!("GPU {gpu}"), e))?;
        let util = opt(d.utilization_rates());
        let mem = opt(d.memory_info());
        Ok(GpuReading {
            utilization_percent: util.as_ref().map(|u| u.gpu),
            memory_utilization_percent: util.as_ref().map(|u| u.memory),
            memory_used_bytes: mem.as_ref().map(|m| m.used),
            memory_total_bytes: mem.as_ref().map(|m| m.total),
            temperature_celsius: opt(d.temperature(TemperatureSensor::Gpu)),
            power_milliwatts: opt(d.power_usage()),
            power_limit_milliwatts: opt(d.enforced_power_limit()),
            sm_clock_mhz: opt(d.clock_info(Clock::SM)),
            memory_clock_mhz: opt(d.clock_info(Clock::Memory)),
            fan_percent: opt(d.fan_speed(0)),
            pcie_tx_kib_per_s: opt(d.pcie_throughput(PcieUtilCounter::Send)),
            pcie_rx_kib_per_s: opt(d.pcie_throughput(PcieUtilCounter::Receive)),
            throttle_reasons: opt(d.current_throttle_reasons()).map(|r| r.bits()),
            ecc_corrected_total: opt(d.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)),
            ecc_uncorrected_total: opt(d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)),
            retired_pages_single_bit: opt(d.retired_pages(RetirementCause::MultipleSingleBitEccErrors))
                .map(|p| p.len() as u64),
            retired_pages_double_bit: opt(d.retired_pages(RetirementCause::DoubleBitEccError)).map(|p| p.len() as u64),
        })
    }

    fn processes(&mut self, gpu: u32) -> Result<Vec<GpuProcess>, GpuError> {
        let d = self.nvml()?.device_by_index(gpu).map_err(|e| err(&format!("GPU {gpu}"), e))?;
        let mut procs: Vec<GpuProcess> = Vec::new();
        for p in d.running_compute_processes().map_err(|e| err("process list", e))? {
            let mem = match p.used_gpu_memory {
                UsedGpuMemory::Used(b) => Some(b),
                UsedGpuMemory::Unavailable => None,
            };
            match procs.iter_mut().find(|x| x.pid == p.pid) {
                // One process can hold several contexts (MIG instances): add them up.
                Some(x) => x.memory_bytes = Some(x.memory_bytes.unwrap_or(0) + mem.unwrap_or(0)),
                None => procs.push(GpuProcess { pid: p.pid, memory_bytes: mem, sm_utilization_percent: None }),
            }
        }
        let since = self.last_util_ts.get(&gpu).copied();
        if let Ok(samples) = d.process_utilization_stats(since) {
            let mut newest = since.unwrap_or(0);
            for s in samples {
                newest = newest.max(s.timestamp);
                if let Some(p) = procs.iter_mut().find(|p| p.pid == s.pid) {
                    p.sm_utilization_percent = Some(p.sm_utilization_percent.unwrap_or(0).max(s.sm_util));
                }
            }
            self.last_util_ts.insert(gpu, newest);
        }
        Ok(procs)
    }

    fn xid_events(&mut self) -> Result<Vec<XidEvent>, GpuError> {
        let Some(set) = self.events.as_ref() else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        // wait(0) returns at once: Timeout when nothing is pending.
        while let Ok(ev) = set.wait(0) {
            let gpu = ev.device.index().unwrap_or(u32::MAX);
            if let Some(XidError::Value(xid)) = ev.event_data {
                out.push(XidEvent { gpu, xid, pid: None });
            }
            if out.len() >= 1000 {
                break;
            }
        }
        Ok(out)
    }
}
