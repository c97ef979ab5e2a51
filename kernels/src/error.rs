//! The one error type of the kernel library.

/// A kernel call whose arguments do not fit the kernel (nothing was
/// written), or one stopped part-way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// A buffer's length does not match what the shape arguments require.
    #[error("argument `{arg}` holds {got} elements but {expected} are required")]
    Length {
        arg: &'static str,
        expected: usize,
        got: usize,
    },
    /// A shape argument is out of range (zero rows, overflow, ...).
    #[error("bad shape: {0}")]
    Shape(String),
    /// The kernel name is not in the library.
    #[error("unknown kernel `{0}`; known kernels: {known}", known = crate::Kernel::known_names())]
    UnknownKernel(String),
    /// A buffer's element type is not one the kernel takes there.
    #[error("kernel `{kernel}` argument `{arg}` is a {got} buffer; {expected}")]
    Type {
        kernel: &'static str,
        arg: &'static str,
        got: &'static str,
        expected: &'static str,
    },
    /// The caller's meter said stop (a deadline or a cancel) part-way
    /// through; the output is partly written.
    #[error("stopped part-way: the job's deadline passed or it was cancelled")]
    Interrupted,
    /// A launch passed the wrong number or kind of arguments.
    #[error("kernel `{kernel}` argument {index}: expected {expected}")]
    Argument {
        kernel: &'static str,
        index: usize,
        expected: String,
    },
}
