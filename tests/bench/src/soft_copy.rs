//! The software device's copy engine: `EXEC` COPY through kcore's page tables on
//! `extmem-softgpu`, against `memcpy` of the same bytes in the same process.
//!
//! Two paths: device memory to device memory (both sides memfds, or sections on Windows,
//! the device mapped, copied directly one 4 KiB chunk at a time) and imported host memory
//! to device memory (the host side read through `process_vm_readv`, or `ReadProcessMemory`,
//! so an unmapped page faults instead of crashing; one call for each stretch that is
//! contiguous on both sides, straight into the device's mapping). The host path is also
//! timed against its floor: the same read through `host_access` alone, with no device.

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

/// Bytes each timed sample copies at least: one copy of 64 KiB takes microseconds, which a
/// clock read and the machine's noise would swamp, so small copies are timed in batches.
const SAMPLE_BYTES: usize = 8 * 1024 * KIB;

/// A way to copy `len` bytes, timed beside the others.
type Contender<'a> = &'a mut dyn FnMut() -> Result<(), String>;

/// Nanoseconds per KiB of copies of `len` bytes by each of `runs`, median of `reps` samples
/// of `SAMPLE_BYTES / len` copies (at least one). Each sample times every contender in
/// turn, so that all of them share the machine's load, after one untimed copy each that
/// faults in both sides' pages.
fn time_per_kib(reps: usize, len: usize, runs: &mut [Contender<'_>]) -> Result<Vec<f64>, String> {
    let batch = (SAMPLE_BYTES / len.max(1)).max(1);
    let kib = u32::try_from(len / KIB * batch).map_err(|e| e.to_string())?;
    let mut samples = vec![Vec::with_capacity(reps); runs.len()];
    for run in runs.iter_mut() {
        run()?;
    }
    for _ in 0..reps {
        for (run, times) in runs.iter_mut().zip(samples.iter_mut()) {
            let start = Instant::now();
            for _ in 0..batch {
                run()?;
            }
            times.push(start.elapsed().as_nanos() as f64 / f64::from(kib));
        }
    }
    Ok(samples.into_iter().map(median_ns).collect())
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
    let host_va = HostVa::new(aligned.as_ptr() as u64);
    let src = if from_host {
        match gpu
            .import_host(host_va, size, true, false)
            .map_err(failed)?
        {
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
    let mut out = vec![0_u8; len];
    let mut syscall_out = vec![0xa5_u8; len];
    let mut ours = || gpu.exec(&cmds).map_err(|e| format!("{e:?}"));
    let mut memcpy = || {
        out.copy_from_slice(black_box(&*aligned));
        black_box(&mut out);
        Ok(())
    };
    // The floor of the host path: the same bytes in one host_access read (one
    // process_vm_readv / ReadProcessMemory) into memory of our own, with no device around
    // it.
    let mut syscall = || {
        extmem_softgpu::host_access::read(host_va, &mut syscall_out)
            .map_err(|fault| format!("{HOST_READ} faulted at {}", fault.addr))?;
        black_box(&mut syscall_out);
        Ok(())
    };
    let times = if from_host {
        time_per_kib(reps, len, &mut [&mut ours, &mut memcpy, &mut syscall])?
    } else {
        time_per_kib(reps, len, &mut [&mut ours, &mut memcpy])?
    };
    let (&[ours, reference, ..], floor) = (times.as_slice(), times.get(2)) else {
        return Err("a contender went untimed".into());
    };
    let (name, path) = match floor {
        Some(floor) => (
            "copy host import -> device",
            format!(
                "{HOST_READ}, which alone takes {floor:.1} ns/KiB ({:.2}x memcpy)",
                floor / reference
            ),
        ),
        None => ("copy device -> device", "direct".to_owned()),
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
