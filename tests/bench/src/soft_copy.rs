//! The software device's copy engine: `EXEC` COPY through kcore's page tables on
//! `extmem-softgpu`, against `memcpy` of the same bytes in the same process.
//!
//! Two paths: device memory to device memory (both sides memfds, or sections on Windows,
//! the device mapped, copied directly one 4 KiB chunk at a time) and imported host memory
//! to device memory (the host side read through `process_vm_readv`, or `ReadProcessMemory`,
//! so an unmapped page faults instead of crashing; one call for each stretch that is
//! contiguous on both sides, straight into the device's mapping).

use std::hint::black_box;
use std::time::Instant;

use extmem::backend::{Backend, BackendError, CopyEngine, GpuVm, HostImport};
use extmem::exec::Command;
use extmem_hw::{GpuVa, HostVa};
use extmem_softgpu::SoftGpu;

use crate::report::{median_ns, Row};

const KIB: usize = 1024;
/// How the copy engine reads imported host memory on this OS (see extmem-softgpu's
/// host_access); the bench also builds for Windows and runs under Wine.
const HOST_READ: &str = if cfg!(windows) {
    "ReadProcessMemory"
} else {
    "process_vm_readv"
};
const SRC_VA: u64 = 1 << 32;
const DST_VA: u64 = 1 << 33;

fn failed(e: BackendError) -> String {
    e.to_string()
}

/// Nanoseconds per KiB of one copy of `len` bytes with `run`, median of `reps`.
fn time_per_kib(
    reps: usize,
    len: usize,
    mut run: impl FnMut() -> Result<(), String>,
) -> Result<f64, String> {
    let kib = u32::try_from(len / KIB).map_err(|e| e.to_string())?;
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        run()?;
        samples.push(start.elapsed().as_nanos() as f64 / f64::from(kib));
    }
    Ok(median_ns(samples))
}

/// One case: copies of `len` bytes into device memory from device memory, or from
/// imported host memory when `from_host`.
fn case(reps: usize, len: usize, from_host: bool) -> Result<Row, String> {
    let size = u64::try_from(len).map_err(|e| e.to_string())?;
    let mut gpu = SoftGpu::new().map_err(failed)?;
    let mut host = vec![0x5a_u8; len + 4 * KIB];
    // The import needs a 4 KiB-aligned pointer inside the vector.
    let skew = host.as_ptr().align_offset(4 * KIB);
    let aligned = host.get_mut(skew..skew + len).ok_or("alignment")?;
    let src = if from_host {
        let ptr = HostVa::new(aligned.as_ptr() as u64);
        match gpu.import_host(ptr, size, true, false).map_err(failed)? {
            Some((handle, HostImport::Pinned | HostImport::Foreign)) => handle,
            None => return Err("the import returned no handle".into()),
        }
    } else {
        gpu.create(size).map_err(failed)?
    };
    let dst = gpu.create(size).map_err(failed)?;
    gpu.bind(src, GpuVa::new(SRC_VA), 0, size, from_host)
        .map_err(failed)?;
    gpu.bind(dst, GpuVa::new(DST_VA), 0, size, false)
        .map_err(failed)?;
    let cmds = [Command::Copy {
        src: GpuVa::new(SRC_VA),
        dst: GpuVa::new(DST_VA),
        size,
    }];
    let ours = time_per_kib(reps, len, || gpu.exec(&cmds).map_err(|e| format!("{e:?}")))?;
    let mut out = vec![0_u8; len];
    let reference = time_per_kib(reps, len, || {
        out.copy_from_slice(black_box(&*aligned));
        black_box(&mut out);
        Ok(())
    })?;
    let (name, path) = if from_host {
        ("copy host import -> device", HOST_READ)
    } else {
        ("copy device -> device", "direct")
    };
    Ok(Row {
        group: "softgpu",
        case: format!("EXEC {name} vs memcpy"),
        size: format!("{} KiB", len / KIB),
        unit: "KiB",
        ours,
        reference: Some(reference),
        reference_name: "memcpy",
        note: format!(
            "{path}; {:.0} MB/s",
            1e9 / (ours * 1024.0) * (1024.0 * 1024.0) / 1e6
        ),
    })
}

/// Every case.
pub fn run(reps: usize) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for from_host in [false, true] {
        for len in [64 * KIB, 1024 * KIB, 16 * 1024 * KIB] {
            rows.push(case(reps, len, from_host)?);
        }
    }
    Ok(rows)
}
