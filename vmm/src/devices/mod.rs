//! The devices a guest sees: a 16550 UART on COM1, an i8042 (reset line, Ctrl+Alt+Del),
//! the ACPI sleep and reset registers (`poweroff`, `reboot`), the ACPI power button (a
//! Generic Event Device), and virtio-mmio block and net devices.

pub mod acpi_pm;
pub mod ged;
pub mod i8042;
pub mod irq;
pub mod serial;
pub mod virtio;
