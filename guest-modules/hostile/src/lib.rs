//! Hostile guests for tests: each misbehaves on every `message` and every `signal`, and behaves
//! on everything else, so that a room can be created and then provoked.
//!
//! Built once per feature: `spin` loops forever, `hog` grows memory without bound, `trap`
//! panics, `flood` sends a flood of messages plus oversized ones.

wit_bindgen::generate!({ world: "room", path: "../../wit" });

use outpost::room::host;
use outpost::room::types::Delivery;

fn misbehave(input: &[u8]) -> Vec<u8> {
    #[cfg(feature = "spin")]
    {
        let mut x = input.len() as u64;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    #[cfg(feature = "hog")]
    {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![input.len() as u8 | 1; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
    #[cfg(feature = "trap")]
    {
        panic!("trap module: deliberate panic on input of {} bytes", input.len());
    }
    #[cfg(feature = "flood")]
    {
        // `big`: one oversized unreliable message and one large reliable one; otherwise a flood of
        // small messages, far past what one call may queue.
        if input == b"big" {
            host::broadcast(&vec![0xAB; 64 * 1024], Delivery::Unreliable);
            host::broadcast(&vec![0xCD; 256 * 1024], Delivery::Reliable);
            return b"sent big".to_vec();
        }
        for i in 0..1_000_000u32 {
            host::broadcast(&i.to_le_bytes(), Delivery::Unreliable);
        }
        return b"flooded".to_vec();
    }
    #[allow(unreachable_code)]
    {
        let _ = (input, Delivery::Reliable);
        host::log(outpost::room::types::LogLevel::Info, "no hostile feature enabled");
        Vec::new()
    }
}

struct Hostile;

impl Guest for Hostile {
    fn init(_room: String, _config: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
    fn join(_p: Player) -> Result<(), String> {
        Ok(())
    }
    fn leave(_who: PlayerId) {}
    fn message(_sender: PlayerId, data: Vec<u8>) {
        misbehave(&data);
    }
    fn tick(_now_ms: u64) {}
    fn signal(data: Vec<u8>) -> Vec<u8> {
        misbehave(&data)
    }
    fn snapshot() -> Vec<u8> {
        Vec::new()
    }
    fn restore(_state: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
}

export!(Hostile);
