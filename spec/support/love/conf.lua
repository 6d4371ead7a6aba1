-- Headless: no window, no graphics, no audio device, so the game runs in CI
-- without a display or a sound card. love.sound (decoding only) stays on.
function love.conf(t)
  t.identity = "fish-love-spec"
  t.window = false
  t.modules.window = false
  t.modules.graphics = false
  t.modules.audio = false
  t.modules.joystick = false
  t.modules.physics = false
  t.modules.video = false
end
