//! `bundle-init`: see the library docs. Configured only by environment (it is an entrypoint).

use std::process::ExitCode;

fn main() -> ExitCode {
    let get = |k: &str| std::env::var(k).ok();
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
        .unwrap_or_else(|| common::consts::path::BIN_DIR.into());
    let setup =
        bundle_init::specs_from_env(&get, &bin_dir, std::path::Path::new(common::consts::path::ROUTES_FILE).exists())
            .and_then(|specs| Ok((specs, bundle_init::Policy::from_env(&get)?)));
    match setup {
        Ok((specs, policy)) => ExitCode::from(bundle_init::run(specs, policy)),
        Err(e) => {
            eprintln!("[bundle-init] error: {e}");
            ExitCode::from(common::daemon::EXIT_USAGE)
        }
    }
}
