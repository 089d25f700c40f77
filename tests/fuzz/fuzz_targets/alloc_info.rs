//! `VkMemoryAllocateInfo` chains from fuzz bytes through `extmem::alloc_info`: parsing
//! must never read out of bounds, loop or panic, must report a too-long chain, a repeated
//! structure type and a second import exactly where the parser meets them, and whatever
//! validation accepts must satisfy the Valid Usage rules checked here independently.
#![no_main]

use ash::vk;
use extmem::alloc_info::{parse, AllocRequest, DeviceLimits, Import};
use extmem_fuzz::alloc_chain::{Chain, ChainInput, Node};
use libfuzzer_sys::fuzz_target;

type Types = vk::ExternalMemoryHandleTypeFlags;

fuzz_target!(|data: &[u8]| {
    let input = ChainInput::decode(data);
    let chain = Chain::build(&input);
    let mut info = vk::MemoryAllocateInfo::default()
        .allocation_size(input.size)
        .memory_type_index(input.memory_type_index);
    info.p_next = chain.head();
    // SAFETY: every pNext of the chain points at a live structure at least as large as
    // the one its sType names (`Chain`'s invariant).
    let parsed = unsafe { parse(&info) };
    // SAFETY: as above; the chain has not changed.
    let again = unsafe { parse(&info) };
    assert_eq!(parsed, again, "parsing is deterministic");

    let expected = input.expected_chain_error();
    let req = match parsed {
        Err(error) => {
            assert_eq!(Some(error), expected, "the chain error for {input:?}");
            assert!(error.result().as_raw() < 0);
            return;
        }
        Ok(req) => req,
    };
    assert_eq!(expected, None, "parse accepted {input:?}");
    assert_eq!(
        (req.size, req.memory_type_index),
        (input.size, input.memory_type_index)
    );
    let imports = input.walk_order().into_iter().any(Node::requests_import);
    assert_eq!(
        req.import != Import::None,
        imports,
        "the import of {input:?}"
    );

    let limits = input.limits();
    let verdict = req.validate(&limits);
    assert_eq!(
        verdict,
        req.validate(&limits),
        "validation is deterministic"
    );
    match verdict {
        Ok(()) => accepted_request_follows_the_rules(&req, &limits),
        Err(error) => assert!(error.result().as_raw() < 0, "{error:?} maps to an error"),
    }
});

/// The Valid Usage rules of `VkMemoryAllocateInfo` that an accepted request must meet,
/// checked without the validator's code.
fn accepted_request_follows_the_rules(req: &AllocRequest, limits: &DeviceLimits) {
    assert!(req.memory_type_index < limits.memory_type_count, "{req:?}");
    match req.import {
        Import::None => assert!(req.size > 0, "07897/07899: {req:?}"),
        Import::HostPointer { handle_type, ptr } => {
            let align = limits.min_import_alignment;
            assert!(
                handle_type == Types::HOST_ALLOCATION_EXT
                    || handle_type == Types::HOST_MAPPED_FOREIGN_MEMORY_EXT,
                "01747: {req:?}"
            );
            assert!(ptr.is_aligned(align), "01749: {req:?}");
            assert!(align.is_aligned(req.size) && req.size > 0, "01745: {req:?}");
            assert!(ptr.checked_add(req.size).is_some(), "{req:?}");
            let bit = 1u32.checked_shl(req.memory_type_index).unwrap_or(0);
            assert!(limits.host_pointer_types & bit != 0, "01744: {req:?}");
            assert!(
                !req.dedicated.is_some_and(|d| d.names_a_resource()),
                "02806: {req:?}"
            );
            assert!(
                !req.dedicated_nv.is_some_and(|d| d.names_a_resource()),
                "02805: {req:?}"
            );
            assert_eq!(req.opaque_capture_address, 0, "03332: {req:?}");
            assert!(
                req.export.is_empty(),
                "host imports export nothing: {req:?}"
            );
        }
        Import::Fd { handle_type, .. } => {
            assert!(
                (handle_type == Types::OPAQUE_FD && limits.caps.opaque_fd)
                    || (handle_type == Types::DMA_BUF_EXT && limits.caps.dma_buf),
                "00669: {req:?}"
            );
            assert_eq!(req.opaque_capture_address, 0, "03333: {req:?}");
        }
        Import::Win32 {
            handle_type,
            handle,
            name,
        } => {
            let named = !name.is_null();
            assert!(limits.caps.win32, "00660: {req:?}");
            assert!(!(named && handle != 0), "01441: {req:?}");
            assert!(
                !named || handle_type == Types::OPAQUE_WIN32,
                "01439: {req:?}"
            );
        }
        Import::Win32Nv { handle_type, .. } => {
            assert_eq!(handle_type.as_raw().count_ones(), 1, "01327: {req:?}");
        }
    }
    if req.export_win32_info.is_some() {
        assert!(req.export.contains(Types::OPAQUE_WIN32), "00657: {req:?}");
    }
}
