fn main() -> std::process::ExitCode {
    synthd::cli::main()
}
