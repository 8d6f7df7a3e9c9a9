//! Running as the Windows service `MusterAgent` (`muster-agent service`,
//! registered by the MSI): the service control manager starts the process,
//! the agent reports itself running, runs the same check-in loop as
//! `muster-agent run`, and stops when the manager says stop or shutdown.
//! Until the host is enrolled (the MSI enrolls only when given a token) it
//! waits, reading its config again every [`ENROLL_WAIT`]. It logs to
//! [`log_path`] (the manager drops a service's stderr).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use windows_service::{define_windows_service, service_dispatcher};

use crate::config::Config;
use crate::run::{Agent, EXIT_REVOKED};

/// The service's name, as the MSI registers it.
pub const SERVICE_NAME: &str = "MusterAgent";
/// How long the service waits before looking for an enrollment again.
pub const ENROLL_WAIT: Duration = Duration::from_secs(30);

/// The service's log file: `agent.log` beside its config file
/// (`%ProgramData%\Muster\agent.log` as the MSI installs it;
/// [`crate::log_file`] keeps it under [`crate::log_file::MAX_BYTES`]).
pub fn log_path(config_path: &Path) -> PathBuf {
    config_path.with_file_name("agent.log")
}

/// The config file the service runs with (the dispatcher's entry point
/// takes no arguments of ours).
static CONFIG_PATH: OnceLock<PathBuf> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

/// Hands this process to the service control manager; returns when the
/// service has stopped. Fails when not started by the manager.
pub fn run(config_path: &Path) -> windows_service::Result<()> {
    let _ = CONFIG_PATH.set(config_path.to_path_buf());
    service_dispatcher::start(SERVICE_NAME, ffi_service_main)
}

fn service_main(_arguments: Vec<OsString>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    // The handler reports STOP_PENDING itself, before it returns: the
    // manager answers the stop request (`sc stop`) with the status the
    // handler left, and the check-in in flight may take a moment to end.
    let handle: Arc<OnceLock<ServiceStatusHandle>> = Arc::new(OnceLock::new());
    let handler_handle = Arc::clone(&handle);
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            if let Some(status) = handler_handle.get() {
                report(status, ServiceState::StopPending, ServiceExitCode::Win32(0));
            }
            let _ = stop_tx.send(true);
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let status = match service_control_handler::register(SERVICE_NAME, handler) {
        Ok(status) => *handle.get_or_init(|| status),
        Err(e) => {
            tracing::error!(error = %e, "cannot register with the service control manager");
            return;
        }
    };
    report(&status, ServiceState::Running, ServiceExitCode::Win32(0));
    let config_path = CONFIG_PATH.get().cloned().unwrap_or_default();
    // One thread, as `muster-agent run` on Linux: the agent waits on the
    // network most of the time, and each worker thread is resident memory.
    let code = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(serve(&config_path, stop_rx)),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            1
        }
    };
    let exit_code = if code == 0 {
        ServiceExitCode::Win32(0)
    } else {
        ServiceExitCode::ServiceSpecific(code)
    };
    report(&status, ServiceState::Stopped, exit_code);
}

/// Tells the manager the service's `state`; while running it accepts stop
/// and shutdown, otherwise no control.
fn report(status: &ServiceStatusHandle, state: ServiceState, exit_code: ServiceExitCode) {
    let controls_accepted = if state == ServiceState::Running {
        ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
    } else {
        ServiceControlAccept::empty()
    };
    let result = status.set_service_status(ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted,
        exit_code,
        checkpoint: 0,
        wait_hint: Duration::from_secs(10),
        process_id: None,
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot report the service status");
    }
}

/// Completes when the manager asks the service to stop.
async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// The service's work: wait for an enrollment, then the check-in loop.
/// Returns the service-specific exit code (0 stopped, 1 failed, 3 revoked).
async fn serve(config_path: &Path, stop: watch::Receiver<bool>) -> u32 {
    let mut agent = loop {
        let loaded = Config::read(config_path)
            .map_err(|e| e.to_string())
            .and_then(|config| Agent::load(config, config_path).map_err(|e| e.to_string()));
        match loaded {
            Ok(agent) => break agent,
            Err(e) => tracing::warn!(
                error = %e,
                "not ready to run (enroll with: muster-agent enroll --server ... --pin ...); looking again in {}s",
                ENROLL_WAIT.as_secs()
            ),
        }
        tokio::select! {
            () = stopped(stop.clone()) => return 0,
            () = tokio::time::sleep(ENROLL_WAIT) => {}
        }
    };
    match agent.run(stopped(stop)).await {
        Ok(()) => 0,
        Err(e) if e.is_revoked() => {
            tracing::error!(error = %e, "stopping for good");
            u32::from(EXIT_REVOKED)
        }
        Err(e) => {
            tracing::error!(error = %e, "the agent stopped");
            1
        }
    }
}
