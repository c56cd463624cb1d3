//! Builds the e2e suite's guest initramfs (see `gitvisor_e2e::vms`) and prints the
//! kernel and initramfs paths, one per line: for `bench/vms.sh` and for trying a VM by
//! hand.

fn main() -> std::process::ExitCode {
    match gitvisor_e2e::vms::guest_image() {
        Ok(image) => {
            println!("{}", image.kernel.display());
            println!("{}", image.initrd.display());
            std::process::ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("cannot build the guest image: {why}");
            std::process::ExitCode::FAILURE
        }
    }
}
