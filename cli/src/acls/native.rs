//! CreateAcls through librdkafka's C admin API (rust-rdkafka does not wrap it): the bindings,
//! one request, and each binding's own result.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;

use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;

use super::{Binding, Operation, Pattern, Resource};

const TIMEOUT_MS: i32 = 30_000;

/// Owns the C objects of one request; everything is destroyed on every path out.
struct Request {
    queue: *mut rd::rd_kafka_queue_t,
    options: *mut rd::rd_kafka_AdminOptions_t,
    acls: Vec<*mut rd::rd_kafka_AclBinding_t>,
    event: *mut rd::rd_kafka_event_t,
}

impl Drop for Request {
    fn drop(&mut self) {
        // SAFETY: each pointer was returned by its librdkafka constructor and is destroyed
        // once, here; null ones were never created.
        unsafe {
            if !self.event.is_null() {
                rd::rd_kafka_event_destroy(self.event);
            }
            for acl in self.acls.drain(..) {
                rd::rd_kafka_AclBinding_destroy(acl);
            }
            if !self.options.is_null() {
                rd::rd_kafka_AdminOptions_destroy(self.options);
            }
            if !self.queue.is_null() {
                rd::rd_kafka_queue_destroy(self.queue);
            }
        }
    }
}

fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live as long as their owner.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn c(s: &str) -> anyhow::Result<CString> {
    CString::new(s).map_err(|_| anyhow::anyhow!("{s:?} contains a NUL byte"))
}

fn resource(r: Resource) -> rd::rd_kafka_ResourceType_t {
    match r {
        Resource::Topic => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
        Resource::Group => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_GROUP,
        Resource::TransactionalId => {
            rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID
        }
    }
}

fn pattern(p: Pattern) -> rd::rd_kafka_ResourcePatternType_t {
    match p {
        Pattern::Literal => rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL,
        Pattern::Prefixed => rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED,
    }
}

fn operation(o: Operation) -> rd::rd_kafka_AclOperation_t {
    use rd::rd_kafka_AclOperation_t::*;
    match o {
        Operation::Read => RD_KAFKA_ACL_OPERATION_READ,
        Operation::Write => RD_KAFKA_ACL_OPERATION_WRITE,
        Operation::Create => RD_KAFKA_ACL_OPERATION_CREATE,
        Operation::Alter => RD_KAFKA_ACL_OPERATION_ALTER,
        Operation::Describe => RD_KAFKA_ACL_OPERATION_DESCRIBE,
        Operation::DescribeConfigs => RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS,
        Operation::AlterConfigs => RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS,
    }
}

/// Creates every binding in one CreateAcls request; an error names each refused binding.
pub fn create_acls(
    admin: &AdminClient<DefaultClientContext>,
    bindings: &[Binding],
) -> anyhow::Result<()> {
    let rk = admin.inner().native_ptr();
    let mut errstr = [0 as c_char; 512];
    // SAFETY: `rk` is a live client for as long as `admin` is borrowed; every object made
    // here is owned by `req` and destroyed when it drops; buffers outlive the calls using them.
    unsafe {
        let mut req = Request {
            queue: rd::rd_kafka_queue_new(rk),
            options: rd::rd_kafka_AdminOptions_new(
                rk,
                rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS,
            ),
            acls: Vec::with_capacity(bindings.len()),
            event: std::ptr::null_mut(),
        };
        rd::rd_kafka_AdminOptions_set_request_timeout(
            req.options,
            TIMEOUT_MS,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        let (any_host, allow) = (
            c("*")?,
            rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
        );
        for b in bindings {
            let (name, principal) = (c(&b.name)?, c(&b.principal)?);
            let acl = rd::rd_kafka_AclBinding_new(
                resource(b.resource),
                name.as_ptr(),
                pattern(b.pattern),
                principal.as_ptr(),
                any_host.as_ptr(),
                operation(b.operation),
                allow,
                errstr.as_mut_ptr(),
                errstr.len(),
            );
            if acl.is_null() {
                anyhow::bail!("{b}: {}", text(errstr.as_ptr()));
            }
            req.acls.push(acl);
        }
        rd::rd_kafka_CreateAcls(
            rk,
            req.acls.as_mut_ptr(),
            req.acls.len(),
            req.options,
            req.queue,
        );
        req.event = rd::rd_kafka_queue_poll(req.queue, TIMEOUT_MS + 5_000);
        if req.event.is_null() {
            anyhow::bail!("CreateAcls: no answer from the cluster within {TIMEOUT_MS} ms");
        }
        if rd::rd_kafka_event_error(req.event)
            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            anyhow::bail!(
                "CreateAcls: {}",
                text(rd::rd_kafka_event_error_string(req.event))
            );
        }
        let result = rd::rd_kafka_event_CreateAcls_result(req.event);
        let mut count = 0usize;
        let results = rd::rd_kafka_CreateAcls_result_acls(result, &mut count);
        let mut refused = Vec::new();
        for i in 0..count {
            let error = rd::rd_kafka_acl_result_error(*results.add(i));
            if !error.is_null() {
                let which = bindings.get(i).map(|b| b.to_string()).unwrap_or_default();
                refused.push(format!(
                    "{which}: {}",
                    text(rd::rd_kafka_error_string(error))
                ));
            }
        }
        if !refused.is_empty() {
            anyhow::bail!(
                "the cluster refused {} ACLs:\n  {}",
                refused.len(),
                refused.join("\n  ")
            );
        }
    }
    Ok(())
}
